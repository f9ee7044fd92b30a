#!/bin/sh
# setup-rules.sh: apply or remove sknock's iptables and ip6tables rules by
# hand, without running the gatekeeper.
#
# The rules come from the daemon itself (`sknockd --config FILE
# --rules-script apply|remove`, which prints rules.Config.Script), so they
# are exactly those sknockd applies at start (and `sknockd --apply-rules`
# at boot, `sknockd --remove-rules` removes). The
# script is generated completely before any of it runs: if sknockd refuses
# the configuration, nothing is changed.
#
# Environment:
#   SKNOCKD=PATH  the sknockd binary to use. Default: ../bin/sknockd next to
#                 this script, else sknockd on PATH, else `go run
#                 ./cmd/sknockd` in this repository.
#   DRY_RUN=1     print the commands instead of running them (no root
#                 needed).
set -eu

usage() {
	cat >&2 <<EOF
usage: $0 apply|remove CONFIG

  apply   install sknock's chains for IPv4 and IPv6 (the gate and its
          helper chains in mangle, jumped to from PREROUTING; the refusal
          in filter, from INPUT and FORWARD), one iptables-restore
          transaction per table
          (idempotent: a chain left by an earlier run is replaced whole);
          until sknockd runs,
          protected ports are closed and knocks unanswered
  remove  delete them again (nothing there is not an error): the
          protected ports become reachable WITHOUT a grant

Set DRY_RUN=1 to print the iptables commands instead of running them,
SKNOCKD=PATH to choose the sknockd binary.
EOF
	exit 2
}

die() {
	echo "$0: $*" >&2
	exit 1
}

[ $# -eq 2 ] || usage
action=$1
config=$2
case $action in
apply | remove) ;;
*) usage ;;
esac
[ -r "$config" ] || die "cannot read config file $config"

dry_run=${DRY_RUN:-0}
if [ "$dry_run" != 1 ] && [ "$(id -u)" -ne 0 ]; then
	die "must run as root to change iptables rules (or set DRY_RUN=1 to print them)"
fi

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")

# render prints the rules script for $action, using the first sknockd found.
render() {
	if [ -n "${SKNOCKD:-}" ]; then
		"$SKNOCKD" --config "$config" --rules-script "$action"
	elif [ -x "$root/bin/sknockd" ]; then
		"$root/bin/sknockd" --config "$config" --rules-script "$action"
	elif command -v sknockd >/dev/null 2>&1; then
		sknockd --config "$config" --rules-script "$action"
	elif command -v go >/dev/null 2>&1 && [ -d "$root/cmd/sknockd" ]; then
		# go run needs the module root as working directory; keep the
		# config path valid from there.
		case $config in
		/*) abs_config=$config ;;
		*) abs_config=$(pwd)/$config ;;
		esac
		(cd "$root" && go run ./cmd/sknockd --config "$abs_config" --rules-script "$action")
	else
		die "sknockd not found: set SKNOCKD, build $root/bin/sknockd, or put it on PATH"
	fi
}

script=$(render) || die "sknockd could not render the $action rules for $config"
[ -n "$script" ] || die "sknockd printed no rules for $action"

if [ "$dry_run" = 1 ]; then
	printf '%s\n' "$script"
	exit 0
fi
if [ "$action" = apply ] && [ ! -e /etc/xtables/connlabel.conf ]; then
	# Name sknock's conntrack label (127), as the package does: without
	# the file every iptables listing of a label rule warns.
	mkdir -p /etc/xtables
	printf '# conntrack label names, see connlabel.conf(5)\n127 sknock-reject\n' >/etc/xtables/connlabel.conf
fi
printf '%s\n' "$script" | sh -e || die "$action failed; see the iptables error above"
echo "sknock rules: $action done" >&2
