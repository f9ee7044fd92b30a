# sknock: build, test, demo and install.
#
#   make                      build bin/sknockd and bin/sknock
#   make test                 scripts/test.sh (as root: also the kernel integration tests)
#   sudo make demo            scripts/demo.sh, the self-contained demonstration
#   sudo make install         binaries to $(PREFIX)/bin, config and systemd units to /etc
#   sudo make uninstall       stop sknockd, remove its rules (sknockd --remove-rules:
#                             the protected ports become reachable) and what
#                             install put there (not /etc/sknock)
#   make deb                  dist/sknock_VERSION_ARCH.deb (nfpm; see packaging/)
#   make rpm                  dist/sknock-VERSION-1.ARCH.rpm (nfpm; built and linted, not install-tested)
#   make man                  bin/man/: sknock.1, sknockd.8, sknock.yaml.5 (go-md2man, from docs/man/*.md)
#   make dist                 dist/: static sknock for linux, darwin and windows
#                             (amd64, arm64), sknockd for linux, and SHA256SUMS
#   make clean
#
# The module path is `sknock`, not a URL, so `go install ...@latest` cannot
# fetch it; build from a checkout with `make install`.
# Variables: PREFIX (/usr/local), DESTDIR (staging root for packagers),
# SYSCONFDIR (/etc), UNITDIR (/etc/systemd/system), VERSION, GO, BUILDDIR,
# HOMEPAGE (the repository's address: the packages' Homepage and copyright
# Source; this is the one place it is set).

PREFIX     ?= /usr/local
DESTDIR    ?=
SYSCONFDIR ?= /etc
UNITDIR    ?= $(SYSCONFDIR)/systemd/system
BINDIR     ?= $(PREFIX)/bin
DATADIR    ?= $(PREFIX)/share/sknock
STATEDIR   ?= /var/lib/sknock
BUILDDIR   ?= bin
HOMEPAGE   ?= https://github.com/sknock/sknock
MANDIR     ?= $(PREFIX)/share/man
GOMD2MAN   ?= go-md2man
GO         ?= go
VERSION    ?= $(shell git -c safe.directory="$(CURDIR)" describe --tags --always --dirty 2>/dev/null || echo 0.1.0)

# Go may live outside root's PATH under sudo.
export PATH := $(PATH):/usr/local/go/bin

LDFLAGS := -X main.version=$(VERSION)

.PHONY: all build test demo install uninstall deb rpm pkg-stage man dist clean

all: build

# Static binaries (no cgo): nothing to resolve at exec, which saves the
# client about a millisecond per knock, and they run on any glibc.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BUILDDIR)/ ./cmd/sknockd ./cmd/sknock

test:
	bash scripts/test.sh

# Release binaries: the client for every laptop, the daemon for Linux
# servers; static (no cgo), named NAME-GOOS-GOARCH[.exe], with SHA256SUMS
# (check: sha256sum -c SHA256SUMS; on macOS shasum -a 256 -c SHA256SUMS).
DISTDIR     ?= dist
DIST_OSES   := linux darwin windows
DIST_ARCHES := amd64 arm64

dist:
	mkdir -p $(DISTDIR) && rm -f $(DISTDIR)/sknock-* $(DISTDIR)/sknockd-* $(DISTDIR)/SHA256SUMS
	@set -e; for os in $(DIST_OSES); do for arch in $(DIST_ARCHES); do \
		ext=; if [ $$os = windows ]; then ext=.exe; fi; \
		echo "sknock  $$os/$$arch"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(DISTDIR)/sknock-$$os-$$arch$$ext ./cmd/sknock; \
	done; done
	@set -e; for arch in $(DIST_ARCHES); do \
		echo "sknockd linux/$$arch"; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(DISTDIR)/sknockd-linux-$$arch ./cmd/sknockd; \
	done
	cd $(DISTDIR) && sha256sum sknock-* sknockd-* >SHA256SUMS

demo:
	bash scripts/demo.sh

# Man pages, each from one Markdown source in docs/man/ (go-md2man, the
# Debian package of that name).
MANPAGES := sknock.1 sknockd.8 sknock.yaml.5

man:
	mkdir -p $(BUILDDIR)/man
	for page in $(MANPAGES); do $(GOMD2MAN) -in docs/man/$$page.md -out $(BUILDDIR)/man/$$page || exit 1; done

install: build man
	install -d -m 0755 $(DESTDIR)$(BINDIR) $(DESTDIR)$(DATADIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8
	install -m 0644 $(BUILDDIR)/man/sknock.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 $(BUILDDIR)/man/sknock.yaml.5 $(DESTDIR)$(MANDIR)/man5/
	install -m 0644 $(BUILDDIR)/man/sknockd.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 0755 $(BUILDDIR)/sknockd $(BUILDDIR)/sknock $(DESTDIR)$(BINDIR)/
	install -m 0755 scripts/setup-rules.sh $(DESTDIR)$(DATADIR)/setup-rules.sh
	install -m 0644 config.yaml $(DESTDIR)$(DATADIR)/config.yaml.example
	install -m 0644 README.md $(DESTDIR)$(DATADIR)/README.md
	for unit in sknockd.service sknockd-rules.service; do \
		sed 's|/usr/local/bin/|$(BINDIR)/|g; s|/usr/local/share/sknock/|$(DATADIR)/|g; s|/etc/sknock/|$(SYSCONFDIR)/sknock/|g' scripts/$$unit >$(DESTDIR)$(UNITDIR)/$$unit.tmp && \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$$unit.tmp && \
		mv -f $(DESTDIR)$(UNITDIR)/$$unit.tmp $(DESTDIR)$(UNITDIR)/$$unit || exit 1; \
	done
	install -d -m 0750 $(DESTDIR)$(SYSCONFDIR)/sknock $(DESTDIR)$(STATEDIR)
	@# Never overwrite an operator's configuration.
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/sknock/config.yaml ]; then \
		echo "kept existing $(DESTDIR)$(SYSCONFDIR)/sknock/config.yaml (the shipped one is $(DATADIR)/config.yaml.example)"; \
	else \
		install -m 0640 config.yaml $(DESTDIR)$(SYSCONFDIR)/sknock/config.yaml; \
		echo "installed $(DESTDIR)$(SYSCONFDIR)/sknock/config.yaml"; \
	fi
	@echo "next: put server.pfx and server.pass in $(SYSCONFDIR)/sknock/, edit config.yaml, then"
	@echo "  sknockd --config $(SYSCONFDIR)/sknock/config.yaml --check"
	@echo "  systemctl daemon-reload && systemctl enable sknockd-rules && systemctl enable --now sknockd"

# Uninstalling takes the protection away, explicitly: a stopped sknockd
# leaves its rules (ports closed), so they are removed with --remove-rules.
# Into a DESTDIR (packaging) the running system is left alone.
uninstall:
	@if [ -z "$(DESTDIR)" ]; then \
		if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then \
			systemctl disable --now sknockd.service sknockd-rules.service 2>/dev/null || true; \
		fi; \
		if [ -x $(BINDIR)/sknockd ] && [ -r $(SYSCONFDIR)/sknock/config.yaml ]; then \
			$(BINDIR)/sknockd --config $(SYSCONFDIR)/sknock/config.yaml --remove-rules; \
		fi; \
	fi
	rm -f $(DESTDIR)$(BINDIR)/sknockd $(DESTDIR)$(BINDIR)/sknock
	rm -f $(DESTDIR)$(UNITDIR)/sknockd.service $(DESTDIR)$(UNITDIR)/sknockd-rules.service
	rm -f $(DESTDIR)$(MANDIR)/man1/sknock.1 $(DESTDIR)$(MANDIR)/man5/sknock.yaml.5 $(DESTDIR)$(MANDIR)/man8/sknockd.8
	rm -f $(DESTDIR)$(DATADIR)/setup-rules.sh $(DESTDIR)$(DATADIR)/config.yaml.example $(DESTDIR)$(DATADIR)/README.md
	rmdir $(DESTDIR)$(DATADIR) 2>/dev/null || true
	@echo "left $(DESTDIR)$(SYSCONFDIR)/sknock/ (configuration, keys) and /var/lib/sknock/ in place"

# The Debian package, built with nfpm (no dpkg tooling needed to build
# it): stripped position-independent binaries (still without cgo, so they
# need no shared library; lintian refuses a static binary outside a
# Debian Go source package), the units with the package's paths, the
# example config as a conffile, /var/lib/sknock, and maintainer scripts
# that start nothing on a fresh install and take the rules away on
# removal (packaging/deb/). The default DEB_VERSION is a tag's version
# (v1.2.3-4-gabc → 1.2.3+4+gabc) or, with no tag, 0.1.0~git<describe>.
NFPM        ?= $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
PKGDIR      ?= dist
DEB_VERSION ?= $(shell echo '$(VERSION)' | sed -e '/^v\{0,1\}[0-9][0-9]*\.[0-9]/!s/^/0.1.0~git/' -e 's/^v//' -e 's/-/+/g')
DEB_ARCH    ?= $(shell $(GO) env GOARCH)

# pkg-stage puts what both packages hold under bin/pkg/, dated by the
# last commit (SOURCE_DATE_EPOCH overrides).
PKG_EPOCH = $${SOURCE_DATE_EPOCH:-$$(git log -1 --format=%ct 2>/dev/null || date +%s)}

pkg-stage:
	rm -rf bin/pkg && mkdir -p bin/pkg $(PKGDIR)
	CGO_ENABLED=0 GOARCH=$(DEB_ARCH) $(GO) build -trimpath -buildmode=pie -ldflags "-s -w -X main.version=$(DEB_VERSION)" -o bin/pkg/ ./cmd/sknockd ./cmd/sknock
	for unit in sknockd.service sknockd-rules.service; do \
		sed 's|/usr/local/bin/sknockd|/usr/sbin/sknockd|g; s|/usr/local/bin/|/usr/bin/|g; s|/usr/local/share/sknock/README.md|/usr/share/doc/sknock/README.md|g; s|/usr/local/share/sknock/|/usr/share/sknock/|g; s|sudo make install *(puts this file in /etc/systemd/system/)|apt install ./sknock_VERSION_ARCH.deb|' \
			scripts/$$unit >bin/pkg/$$unit || exit 1; \
	done
	$(MAKE) --no-print-directory man BUILDDIR=bin/pkg
	gzip -9nf bin/pkg/man/*
	sed 's|@HOMEPAGE@|$(HOMEPAGE)|' packaging/deb/copyright >bin/pkg/copyright
	printf 'sknock (%s) unstable; urgency=medium\n\n  * Built from %s.\n\n -- sknock maintainers <maintainers@users.noreply.r-seed-9ff8c8eb.example>  %s\n' \
		'$(DEB_VERSION)' '$(VERSION)' "$$(date -R -u -d @$(PKG_EPOCH))" | gzip -9n >bin/pkg/changelog.gz
	printf -- '- semver: %s-1\n  date: %s\n  packager: sknock maintainers <maintainers@users.noreply.r-seed-9ff8c8eb.example>\n  changes:\n    - commit: %s\n      note: Built from %s.\n' \
		'$(DEB_VERSION)' "$$(date -u -d @$(PKG_EPOCH) +%Y-%m-%dT%H:%M:%SZ)" '$(VERSION)' '$(VERSION)' >bin/pkg/changelog.yml

NFPM_ENV = SKNOCK_VERSION='$(DEB_VERSION)' SKNOCK_ARCH='$(DEB_ARCH)' SKNOCK_HOMEPAGE='$(HOMEPAGE)'

deb: pkg-stage
	$(NFPM_ENV) $(NFPM) package --config packaging/nfpm.yaml --packager deb --target $(PKGDIR)/
	@ls -1 $(PKGDIR)/sknock_$(DEB_VERSION)_$(DEB_ARCH).deb

# The RPM: the same files and units, RPM scriptlets (packaging/rpm/).
rpm: pkg-stage
	sed 's|^#rpm-changelog:|changelog:|' packaging/nfpm.yaml >bin/pkg/nfpm-rpm.yaml
	$(NFPM_ENV) $(NFPM) package --config bin/pkg/nfpm-rpm.yaml --packager rpm --target $(PKGDIR)/
	@ls -1 $(PKGDIR)/sknock-*.rpm

clean:
	rm -rf $(BUILDDIR) bin/pkg $(PKGDIR)
