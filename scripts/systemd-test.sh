#!/usr/bin/env bash
# systemd-test.sh: the Debian package under a real systemd, as a new
# operator meets it. Builds a Debian bookworm rootfs with mmdebstrap (once
# per run), boots it with systemd-nspawn in a network namespace of its own
# (198.18.22.0/24, a veth to a client namespace), installs the .deb from
# `make deb`, and checks, each step by its outcome:
#
#   the README's path from `apt install` to a first knock, command by
#   command; a fresh install starts nothing; enable; notify (STATUS=);
#   reload of a good file, and of a bad one (`systemctl reload` fails, and
#   `journalctl -p err` shows why); the watchdog restarting a stopped
#   sknockd with the port closed throughout; stop keeps the rules; boot
#   ordering (a prober sees 0 opens while the container boots); an upgrade
#   (0 opens); remove (rules gone), reinstall (units enabled again), purge;
#   and `systemd-analyze security` of both units.
#
#   sudo scripts/systemd-test.sh        (scripts/test.sh runs it as root)
#
# Skips, saying why, without root, systemd-nspawn, mmdebstrap or network
# namespaces; under SKNOCK_E2E=1 a skip is a failure. Facts it relies on:
# without a host systemd, nspawn needs --register=no --keep-unit and then
# runs in the caller's cgroup, so the script moves itself into a cgroup of
# its own first; --network-namespace-path gives the container no
# CAP_NET_ADMIN, so it is passed; the units' modprobe ExecStartPre fails
# harmlessly inside.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
started=$(date +%s)

skip() {
	if [ "${SKNOCK_E2E:-0}" = 1 ]; then
		echo "FAIL: real-systemd test cannot run (SKNOCK_E2E=1): $*"
		exit 1
	fi
	echo "SKIP: real-systemd test: $*"
	exit 0
}
[ "$(id -u)" -eq 0 ] || skip "needs root"
for tool in systemd-nspawn mmdebstrap nsenter ip iptables make go; do
	command -v "$tool" >/dev/null 2>&1 || skip "$tool not installed (apt-get install systemd-container mmdebstrap)"
done

suite=${SKNOCK_SYSTEMD_SUITE:-bookworm}
tag=sksd$$
cns=$tag-c # the container's network namespace
hns=$tag-h # the client's
gw=198.18.22.2
client=198.18.22.1
work=$(mktemp -d /var/tmp/sknock-systemd.XXXXXX)
root=$work/rootfs
nspawn_pid=
cgroups=()
failures=0

log() { printf '%s [%3ss] %s\n' "==>" "$(($(date +%s) - started))" "$*"; }
ok() { echo "ok   - $*"; }
fail() {
	echo "FAIL - $*"
	failures=$((failures + 1))
}

cleanup() {
	set +e
	stop_container
	ip netns del "$cns" 2>/dev/null
	ip netns del "$hns" 2>/dev/null
	# Out of our cgroups (into their parents) before removing them.
	for cg in "${cgroups[@]}"; do
		echo $$ >"$(dirname "$cg")/cgroup.procs" 2>/dev/null
		find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
	done
	rm -rf "$work"
}
trap cleanup EXIT

# own_cgroup moves this script into a cgroup of its own in each hierarchy
# nspawn uses (cgroup v2, or v1's name=systemd and the hybrid unified).
own_cgroup() {
	local line hier path base
	while IFS=: read -r _ hier path; do
		case $hier in
		"") base=/sys/fs/cgroup; [ -e $base/cgroup.procs ] && [ ! -d $base/unified ] || base=/sys/fs/cgroup/unified ;;
		name=systemd) base=/sys/fs/cgroup/systemd ;;
		*) continue ;;
		esac
		[ -e "$base$path/cgroup.procs" ] || continue
		line="$base${path%/}/$tag"
		mkdir -p "$line" && echo $$ >"$line/cgroup.procs" || skip "cannot move into cgroup $line"
		cgroups+=("$line")
	done </proc/self/cgroup
}

# in_c runs a command inside the booted container.
in_c() { nsenter -t "$cpid" -a "$@"; }
in_client() { ip netns exec "$hns" "$@"; }

start_container() {
	: >"$work/boot.log"
	systemd-nspawn -D "$root" --boot --register=no --keep-unit --machine="$tag" \
		--network-namespace-path="/run/netns/$cns" --capability=CAP_NET_ADMIN \
		--console=read-only >>"$work/boot.log" 2>&1 &
	nspawn_pid=$!
	cpid=
	local state=
	for _ in $(seq 600); do
		[ -n "$cpid" ] || cpid=$(pgrep -P "$nspawn_pid" -x systemd || true)
		if [ -n "$cpid" ]; then
			state=$(in_c systemctl is-system-running 2>/dev/null || true)
			case $state in running | degraded) return 0 ;; esac
		fi
		kill -0 "$nspawn_pid" 2>/dev/null || break
		sleep 0.1
	done
	tail -n 30 "$work/boot.log"
	echo "container did not boot (state: ${state:-none})"
	exit 1
}

stop_container() {
	[ -n "$nspawn_pid" ] || return 0
	kill -TERM "$nspawn_pid" 2>/dev/null || true
	for _ in $(seq 300); do
		kill -0 "$nspawn_pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$nspawn_pid" 2>/dev/null || true
	wait "$nspawn_pid" 2>/dev/null || true
	nspawn_pid=
}

# prober counts, from the client, the TCP connections to the protected
# port that succeed, until its stop file appears; the count goes to $1.
start_prober() {
	rm -f "$work/probe.stop"
	in_client bash -c '
		opens=0
		while [ ! -e "$2" ]; do
			if timeout 0.3 bash -c "exec 3<>/dev/tcp/$3/2000" 2>/dev/null; then opens=$((opens + 1)); fi
			sleep 0.05
		done
		echo "$opens" >"$1"' _ "$1" "$work/probe.stop" "$gw" &
	prober_pid=$!
}
# stop_prober waits for the prober (not from a subshell: it is this
# shell's child) and sets opens.
stop_prober() {
	touch "$work/probe.stop"
	wait "$prober_pid"
	opens=$(cat "$1")
}

port_open() { in_client timeout 1 bash -c "exec 3<>/dev/tcp/$gw/2000" 2>/dev/null; }
port_closed() { ! port_open; }

# expect DESCRIPTION COMMAND...: the command must succeed.
expect() {
	local what=$1
	shift
	if out=$("$@" 2>&1); then ok "$what"; else
		fail "$what: $*"
		printf '%s\n' "$out" | tail -n 20 | sed 's/^/       /'
	fi
}
# expect_output DESCRIPTION WANT COMMAND...: succeed and print WANT (a grep -E pattern).
expect_output() {
	local what=$1 want=$2
	shift 2
	if out=$("$@" 2>&1) && printf '%s\n' "$out" | grep -Eq -- "$want"; then ok "$what"; else
		fail "$what: want /$want/ from: $*"
		printf '%s\n' "$out" | tail -n 20 | sed 's/^/       /'
	fi
}

own_cgroup
ip netns add "$cns" || skip "cannot make network namespaces"
ip netns add "$hns"
ip link add "$tag-v0" netns "$hns" type veth peer name "$tag-v1" netns "$cns"
ip -n "$hns" addr add "$client/24" dev "$tag-v0"
ip -n "$cns" addr add "$gw/24" dev "$tag-v1"
for ns in "$hns" "$cns"; do
	ip -n "$ns" link set lo up
done
ip -n "$hns" link set "$tag-v0" up
ip -n "$cns" link set "$tag-v1" up

log "make deb (1.0.0 and the upgrade 1.0.1)"
make -s -C "$repo" deb PKGDIR="$work" DEB_VERSION=1.0.0 >"$work/make.log" 2>&1 || { cat "$work/make.log"; exit 1; }
cp "$repo/bin/pkg/sknock" "$work/sknock-client"
make -s -C "$repo" deb PKGDIR="$work" DEB_VERSION=1.0.1 >>"$work/make.log" 2>&1 || { cat "$work/make.log"; exit 1; }

log "mmdebstrap $suite (minbase + systemd, iptables)"
mmdebstrap --quiet --variant=minbase --include=systemd,systemd-sysv,dbus,iptables,iproute2,kmod \
	"$suite" "$root" >"$work/mmdebstrap.log" 2>&1 || { tail -n 30 "$work/mmdebstrap.log"; skip "mmdebstrap $suite failed (no Debian archive?)"; }
cp "$work"/sknock_1.0.*_*.deb "$root/root/"
# The service to hide: tcp/2000, an echo server of systemd's own.
cat >"$root/etc/systemd/system/echo.socket" <<'EOF'
[Socket]
ListenStream=2000
Accept=yes
[Install]
WantedBy=sockets.target
EOF
cat >"$root/etc/systemd/system/echo@.service" <<'EOF'
[Service]
ExecStart=/bin/cat
StandardInput=socket
EOF
mkdir -p "$root/etc/systemd/system/sockets.target.wants"
ln -s ../echo.socket "$root/etc/systemd/system/sockets.target.wants/echo.socket"

log "boot"
start_container
expect "echo service reachable before sknock" port_open

log "install: starts nothing"
deb=$(cd "$root/root" && ls sknock_1.0.0_*.deb)
expect_output "apt install says sknockd is NOT started" "sknockd is NOT started" \
	in_c env DEBIAN_FRONTEND=noninteractive apt-get install -y "/root/$deb"
expect_output "fresh install: sknockd disabled" "^disabled" in_c sh -c 'systemctl is-enabled sknockd.service || true'
expect_output "fresh install: sknockd inactive" "^inactive" in_c sh -c 'systemctl is-active sknockd.service || true'
expect "fresh install: no rules" in_c sh -c '! iptables -t mangle -S SKNOCK'
expect "fresh install: port still reachable" port_open
expect_output "man sknockd(8) installed" "sknockd.8.gz" in_c ls /usr/share/man/man8

log "the README's first start, command by command"
readme() { expect "README: $*" in_c sh -c "$*"; }
readme 'sknock pki init --dir /etc/sknock/ca'
readme 'umask 077; head -c 24 /dev/urandom | base64 > /etc/sknock/server.pass'
readme 'sknock pki server --dir /etc/sknock/ca --name gatekeeper --password-file /etc/sknock/server.pass'
readme 'cp /etc/sknock/ca/gatekeeper.pfx /etc/sknock/server.pfx'
readme 'sknock pki crl --dir /etc/sknock/ca && install -D -m 644 /etc/sknock/ca/ca.crl /var/lib/sknock/ca.crl'
readme "sed -i -e 's|^  file: \"\"|  file: /var/lib/sknock/ca.crl|' -e 's|^  protect: .*|  protect: [tcp/2000]|' /etc/sknock/config.yaml"
readme 'sknockd --config /etc/sknock/config.yaml --check'
readme 'systemctl daemon-reload'
readme 'systemctl enable sknockd-rules'
readme 'systemctl enable --now sknockd'
expect_output "README: sknock status" "rules: +whole" in_c sknock status
expect "protected port closed without a knock" port_closed
readme 'umask 077; head -c 24 /dev/urandom | base64 > /etc/sknock/ca/alice.pass'
readme 'sknock pki client --dir /etc/sknock/ca --name alice --allow tcp/2000 --password-file /etc/sknock/ca/alice.pass'
cp "$root/etc/sknock/ca/alice.pfx" "$root/etc/sknock/ca/alice.pass" "$root/etc/sknock/ca/gatekeeper.pem" "$work/"
expect_output "README: first knock from the client" "tcp/2000 open" \
	in_client "$work/sknock-client" knock --pkcs12 "$work/alice.pfx" --server-cert "$work/gatekeeper.pem" --password-file "$work/alice.pass" "$gw" tcp/2000
expect_output "the grant is listed" "$client" in_c sknock grants list
expect_output "grants revoke prints the ended grants under their own header" "ENDED: SOURCE" in_c sknock grants revoke --all

log "notify"
expect_output "Type=notify, active" "^active" in_c systemctl is-active sknockd
expect_output "STATUS= shows what it serves" "StatusText=serving" in_c systemctl show -p StatusText sknockd

log "reload"
in_c sed -i 's/^  open_duration: 15s/  open_duration: 20s/' /etc/sknock/config.yaml
expect "systemctl reload of a good file succeeds" in_c systemctl reload sknockd
expect_output "sknock status shows it applied" "reload: +applied .*gate.open_duration" in_c sknock status
in_c sed -i 's/^  policy: drop/  policy: sometimes/' /etc/sknock/config.yaml
expect "systemctl reload of a bad file FAILS" in_c sh -c '! systemctl reload sknockd'
expect_output "journalctl -p err shows the refusal, with the key" "reload refused.*gate.policy" in_c journalctl -u sknockd -p err -o cat --no-pager
expect_output "sknock reload prints the same error" "gate.policy" in_c sh -c 'sknock reload 2>&1; true'
expect_output "sknock status shows it refused" "reload: +REFUSED" in_c sknock status
expect_output "sknockd still serving" "^active" in_c systemctl is-active sknockd
in_c sed -i 's/^  policy: sometimes/  policy: drop/' /etc/sknock/config.yaml
expect "reload of the fixed file" in_c systemctl reload sknockd

log "watchdog: SIGSTOP the daemon, systemd must restart it; port closed throughout"
restarts=$(in_c systemctl show -p NRestarts --value sknockd)
start_prober "$work/opens.watchdog"
in_c sh -c 'kill -STOP "$(systemctl show -p MainPID --value sknockd)"'
restarted=
for _ in $(seq 600); do
	if [ "$(in_c systemctl show -p NRestarts --value sknockd)" -gt "$restarts" ] && [ "$(in_c systemctl is-active sknockd)" = active ]; then
		restarted=yes
		break
	fi
	sleep 0.1
done
stop_prober "$work/opens.watchdog"
[ -n "$restarted" ] && ok "watchdog restarted the stopped sknockd" || fail "watchdog did not restart sknockd within 60 s"
[ "$opens" = 0 ] && ok "0 opens while the watchdog restarted it" || fail "$opens opens while the watchdog restarted it"

log "stop keeps the rules"
expect "systemctl stop sknockd" in_c systemctl stop sknockd
expect "rules still in place" in_c iptables -t mangle -S SKNOCK
expect "port still closed" port_closed

log "boot ordering: a prober during a whole boot"
stop_container
start_prober "$work/opens.boot"
boot_started=$(date +%s%N)
start_container
boot_took=$((($(date +%s%N) - boot_started) / 1000000))ms
stop_prober "$work/opens.boot"
[ "$opens" = 0 ] && ok "0 opens during boot (booted in ${boot_took})" || fail "$opens opens during boot"
expect_output "sknockd-rules ran before network-pre.target" "network-pre.target" in_c systemctl show -p Before sknockd-rules
expect_output "sknockd-rules active after boot" "^active" in_c systemctl is-active sknockd-rules
expect_output "sknockd active after boot" "^active" in_c systemctl is-active sknockd

log "systemd-analyze security"
for unit in sknockd.service sknockd-rules.service; do
	line=$(in_c systemd-analyze security "$unit" 2>&1 | tail -n 1)
	echo "     $line"
	score=$(printf '%s\n' "$line" | grep -Eo '[0-9]+\.[0-9]+' | head -n 1)
	awk -v s="${score:-99}" 'BEGIN { exit !(s < 3) }' && ok "$unit exposure ${score} < 3" || fail "$unit exposure ${score:-?}"
done

log "upgrade to 1.0.1 while running: 0 opens, config kept, restarted"
pid=$(in_c systemctl show -p MainPID --value sknockd)
start_prober "$work/opens.upgrade"
expect "apt install the upgrade" in_c env DEBIAN_FRONTEND=noninteractive apt-get install -y /root/sknock_1.0.1_"${deb##*_}"
stop_prober "$work/opens.upgrade"
[ "$opens" = 0 ] && ok "0 opens during the upgrade" || fail "$opens opens during the upgrade"
expect_output "upgraded binary" "1.0.1" in_c sknockd --version
expect_output "config kept" "protect: \[tcp/2000\]" in_c cat /etc/sknock/config.yaml
[ "$(in_c systemctl show -p MainPID --value sknockd)" != "$pid" ] && ok "sknockd restarted by the upgrade" || fail "sknockd not restarted by the upgrade"

log "remove, reinstall, purge"
expect "apt remove" in_c env DEBIAN_FRONTEND=noninteractive apt-get remove -y sknock
expect "rules removed" in_c sh -c '! iptables -t mangle -S SKNOCK'
expect "port reachable after remove" port_open
expect_output "reinstall enables the units again" "enabled again" \
	in_c env DEBIAN_FRONTEND=noninteractive apt-get install -y /root/sknock_1.0.1_"${deb##*_}"
expect_output "reinstalled sknockd enabled" "^enabled" in_c systemctl is-enabled sknockd
expect_output "reinstalled sknockd active" "^active" in_c systemctl is-active sknockd
in_c sed -i 's|^  protect: .*|  protect: [tcp/2000|' /etc/sknock/config.yaml # does not parse
expect_output "apt remove with a broken config removes the rules by chain name" "removed chain SKNOCK" \
	in_c env DEBIAN_FRONTEND=noninteractive apt-get remove -y sknock
expect "rules removed by name" in_c sh -c '! iptables -t mangle -S SKNOCK && ! iptables -S SKNOCK'
expect_output "apt purge says what it purged" "purged /etc/sknock/config.yaml and /var/lib/sknock" \
	in_c env DEBIAN_FRONTEND=noninteractive apt-get purge -y sknock
expect "purge deleted /var/lib/sknock and the config" in_c sh -c '[ ! -e /var/lib/sknock ] && [ ! -e /etc/sknock/config.yaml ]'
expect "purge kept the operator's keys" in_c test -e /etc/sknock/server.pfx

stop_container
took=$(($(date +%s) - started))
if [ "$failures" -gt 0 ]; then
	echo "real-systemd test: $failures check(s) FAILED (${took}s); boot log tail:"
	tail -n 20 "$work/boot.log"
	exit 1
fi
echo "real-systemd test: all checks passed in ${took}s"
