#!/usr/bin/env bash
# The "run it" command: a self-contained demonstration of sknock, as root.
#
#   sudo scripts/demo.sh         (or: sudo make demo)
#
# It builds sknockd and sknock, makes a throwaway sandbox of two network
# namespaces joined by a veth pair (server 198.18.0.1, client 198.18.0.2;
# the ranges reserved for network tests), a small PKI made with
# `sknock pki`, a tiny TCP service on 198.18.0.1:2000 and sknockd guarding
# it with a config derived from the shipped config.yaml. Then it shows:
#
#   1. the service hidden from the client (connection refused),
#   2. the client knocking with `sknock knock`,
#   3. the service reachable,
#   4. sknockd's JSON log line of that decision,
#   5. the client's certificate revoked (pki revoke, pki crl, SIGHUP) and
#      its next knock refused, with the log line saying why.
#
# Everything it makes lives in the two namespaces and one temporary
# directory, and is removed on the way out, also after an error, Ctrl-C or
# SIGTERM: sknockd is stopped with SIGTERM (which keeps its rules, so the
# port stays closed), its rules are removed with `sknockd --remove-rules`, then
# whatever still runs in the namespaces is killed and they are deleted.
# The host's own network namespace and iptables rules are never touched.
# Runs non-interactively in about 20 s (plus the first build).
#
# The service is a few lines of Go written into the sandbox and built with
# the binaries (Go is needed anyway; nc, socat or python may be missing on a
# fresh machine). The client side connects with bash's /dev/tcp.
set -euo pipefail
export LC_ALL=C

# The whole script is one brace group, so bash has read and parsed all of
# it before the first command runs: a Ctrl-C that lands while bash would
# otherwise still be reading the file could cut that read short and turn
# into "unexpected EOF" (exit 2) instead of the clean-up.
{

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# sudo and CI may give a bare environment; go needs HOME (or GOCACHE).
export HOME="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
export PATH="$PATH:/usr/local/go/bin:$HOME/go/bin:/usr/sbin:/sbin"
export GOWORK=off

SERVER_IP=198.18.0.1
CLIENT_IP=198.18.0.2
PORT=2000
OPEN_FOR=5s # gate.open_duration for the demo (shipped default 15s), so step 5 need not wait long
SRV="sknock-demo-srv-$$"
CLI="sknock-demo-cli-$$"

# State the cleanup looks at; empty until made.
WORK=""
CTL=""
DAEMON_PID=""
SERVICE_PID=""
MADE_NS=()
START=$SECONDS

# ---------------------------------------------------------------- output
if [ -t 1 ]; then
	B=$'\e[1m' DIM=$'\e[2m' GRN=$'\e[32m' RED=$'\e[31m' CYN=$'\e[36m' RST=$'\e[0m'
else
	B="" DIM="" GRN="" RED="" CYN="" RST=""
fi
step() { printf '\n%s[%s/5] %s%s\n' "$B$CYN" "$1" "$2" "$RST"; }
info() { printf ' *  %s\n' "$*"; }
shown() { printf '    %s$ %s%s\n' "$DIM" "$*" "$RST"; }
ok() { printf '    %sOK%s  %s\n' "$GRN" "$RST" "$*"; }
indent() { sed 's/^/    /'; }
die() {
	printf '\n%sdemo FAILED: %s%s\n' "$B$RED" "$*" "$RST" >&2
	if [ -n "$WORK" ] && [ -s "$WORK/sknockd.log" ]; then
		echo "--- last lines of sknockd's log ---" >&2
		tail -n 15 "$WORK/sknockd.log" >&2 || true
	fi
	exit 1
}

# ---------------------------------------------------------------- helpers
# alive PID: the process exists and is not a zombie.
alive() {
	local st
	[ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 1
	st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	st=${st##*) }
	[ "${st:0:1}" != Z ]
}

# pause SECONDS, interruptible at once by INT/TERM (the trap runs during wait).
pause() {
	sleep "$1" &
	wait $! 2>/dev/null || true
}

# wait_log PATTERN SECONDS [MIN_COUNT]: wait until sknockd's log has at
# least MIN_COUNT (default 1) lines matching the fixed string PATTERN.
wait_log() {
	local pattern=$1 deadline=$((SECONDS + $2)) want=${3:-1} n
	while :; do
		n=$(grep -cF -- "$pattern" "$WORK/sknockd.log" 2>/dev/null || true)
		[ "${n:-0}" -ge "$want" ] && return 0
		alive "$DAEMON_PID" || die "sknockd exited (waiting for $pattern in its log)"
		[ "$SECONDS" -lt "$deadline" ] || return 1
		pause 0.1
	done
}

# connect: from the client namespace, open a TCP connection to the service
# and print its greeting. The exit status says whether it answered.
connect() {
	ip netns exec "$CLI" timeout --foreground 3 bash -c \
		'exec 3<>"/dev/tcp/$1/$2" && IFS= read -r -t 2 line <&3 && printf "%s\n" "$line"' \
		connect "$SERVER_IP" "$PORT" 2>&1
}

# kill_ns NAME: kill whatever still runs in a namespace, then delete it.
kill_ns() {
	local pids
	pids=$(ip netns pids "$1" 2>/dev/null || true)
	if [ -n "$pids" ]; then
		# shellcheck disable=SC2086
		kill -KILL $pids 2>/dev/null || true
	fi
	ip netns del "$1" 2>/dev/null || true
}

# ---------------------------------------------------------------- cleanup
# The script's own stdout and stderr, for the cleanup's messages.
exec 9>&1 8>&2
cleanup() {
	local rc=$? pid status
	trap '' INT TERM # a second Ctrl-C must not cut the cleanup short
	set +eu
	# The signal may have come while a command's output went to a file.
	exec 1>&9 2>&8
	case $rc in
	130) printf '\n%sinterrupted (SIGINT)%s\n' "$B" "$RST" ;;
	143) printf '\n%sterminated (SIGTERM)%s\n' "$B" "$RST" ;;
	esac
	printf '%s==> cleaning up%s\n' "$B" "$RST"
	if alive "$SERVICE_PID"; then
		kill -TERM "$SERVICE_PID" 2>/dev/null
	fi
	if alive "$DAEMON_PID"; then
		# SIGTERM: sknockd stops and keeps its rules (the port stays
		# closed); removing them is the explicit --remove-rules.
		kill -TERM "$DAEMON_PID" 2>/dev/null
		for _ in $(seq 50); do alive "$DAEMON_PID" || break; sleep 0.1; done
		if alive "$DAEMON_PID"; then
			echo " *  sknockd did not stop within 5 s; killing it (its rules die with the namespace)"
			kill -KILL "$DAEMON_PID" 2>/dev/null
		fi
		wait "$DAEMON_PID" 2>/dev/null
		status=$?
		if [ -n "$WORK" ] && ip netns exec "$SRV" sknockd --config "$WORK/config.yaml" --remove-rules >/dev/null 2>&1 &&
			! ip netns exec "$SRV" iptables -S SKNOCK >/dev/null 2>&1; then
			echo " *  sknockd stopped (exit status $status), keeping its rules; then sknockd --remove-rules removed them"
		else
			echo " *  sknockd stopped (exit status $status), its chain still there; it goes with the namespace"
		fi
	fi
	for ns in "${MADE_NS[@]}"; do
		kill_ns "$ns"
	done
	[ "${#MADE_NS[@]}" -eq 0 ] || echo " *  deleted namespaces ${MADE_NS[*]} (and the veth pair)"
	# Anything else started in the background (a sleep, a killed child).
	for pid in $(jobs -p); do kill -KILL "$pid" 2>/dev/null; done
	wait 2>/dev/null
	if [ -n "$WORK" ] && [ -d "$WORK" ]; then
		cd /
		rm -rf -- "$WORK"
		echo " *  removed $WORK"
	fi
	if [ -n "$CTL" ] && [ -d "$CTL" ]; then
		rm -rf -- "$CTL"
	fi
	if [ "$rc" = 0 ]; then
		printf '%sdemo finished in %d s; nothing left behind%s\n' "$B$GRN" "$((SECONDS - START))" "$RST"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- preflight
[ "$(id -u)" -eq 0 ] || { echo "demo.sh: run as root (it makes network namespaces): sudo $0" >&2; exit 2; }
for c in go ip iptables timeout setsid; do
	command -v "$c" >/dev/null 2>&1 || { echo "demo.sh: $c not found (need Go 1.26, iproute2, iptables, coreutils)" >&2; exit 2; }
done
# Kernel modules the rules use; usually autoloaded, harmless when present.
for m in nfnetlink_queue xt_NFQUEUE nf_conntrack xt_conntrack xt_mark xt_length ipt_REJECT veth; do
	modprobe -q "$m" 2>/dev/null || true
done
# Namespaces of an earlier demo that was killed with SIGKILL (its PID is gone).
for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
	case $ns in
	sknock-demo-srv-* | sknock-demo-cli-*)
		if ! [ -e "/proc/${ns##*-}" ]; then
			kill_ns "$ns"
			info "removed namespace $ns left by an earlier, killed demo"
		fi
		;;
	esac
done

printf '%ssknock demo%s  (namespaces %s and %s; host network untouched)\n' "$B" "$RST" "$SRV" "$CLI"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sknock-demo.XXXXXX")
chmod 0700 "$WORK"
# The control socket's path must fit a unix socket address (108 bytes),
# which $WORK under a long TMPDIR may not.
CTL=$(mktemp -d /tmp/skd.XXXXXX)
mkdir "$WORK/gotmp"
export GOTMPDIR="$WORK/gotmp" # go build's scratch files go with the sandbox, also when interrupted
cd "$WORK"
info "sandbox directory $WORK"

# ---------------------------------------------------------------- build
VERSION=$(git -C "$ROOT" -c safe.directory="$ROOT" describe --tags --always --dirty 2>/dev/null || echo 0.1.0)
(cd "$ROOT" && CGO_ENABLED=0 go build -ldflags "-X main.version=$VERSION" -o "$WORK/bin/" ./cmd/...) ||
	die "go build failed"
mkdir -p "$WORK/service"
cat >"$WORK/service/go.mod" <<'EOF'
module demoservice

go 1.22
EOF
cat >"$WORK/service/main.go" <<'EOF'
// The demo's hidden service: greets every connection with one line.
package main

import (
	"fmt"
	"net"
	"os"
	"time"
)

func main() {
	l, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("listening on", l.Addr())
	for {
		c, err := l.Accept()
		if err != nil {
			os.Exit(1)
		}
		go func() {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintf(c, "hello from the hidden service on %s\n", l.Addr())
			c.Close()
		}()
	}
}
EOF
(cd "$WORK/service" && go build -o "$WORK/bin/sknock-demo-service" .) || die "building the demo service failed"
export PATH="$WORK/bin:$PATH"
info "built $(sknockd --version) and $(sknock --version) into bin/  (go build -ldflags \"-X main.version=$VERSION\" ./cmd/...)"

# ---------------------------------------------------------------- network
ip netns add "$SRV" && MADE_NS+=("$SRV")
ip netns add "$CLI" && MADE_NS+=("$CLI")
ip -n "$SRV" link set lo up
ip -n "$CLI" link set lo up
# Both ends are created directly inside the namespaces, never on the host.
ip -n "$SRV" link add veth-srv type veth peer name veth-cli netns "$CLI"
ip -n "$SRV" addr add "$SERVER_IP/24" dev veth-srv
ip -n "$CLI" addr add "$CLIENT_IP/24" dev veth-cli
ip -n "$SRV" link set veth-srv up
ip -n "$CLI" link set veth-cli up
info "network: $SRV $SERVER_IP <-veth-> $CLI $CLIENT_IP"

# ---------------------------------------------------------------- PKI
mkdir -p pki
# One simple command, neither a pipeline nor a command substitution: a
# Ctrl-C that lands while bash forks those (with its INT trap set) could
# end the script without its cleanup, or be lost. 18 random bytes in hex,
# on one line (the password is the file's first line).
od -An -tx1 -w18 -N18 /dev/urandom >pki/password
chmod 0600 pki/password
{
	sknock pki init --dir pki
	sknock pki server --dir pki --name gatekeeper --password-file pki/password
	sknock pki client --dir pki --name alice --allow "tcp/$PORT" --password-file pki/password
	sknock pki crl --dir pki
} >pki/pki.out 2>&1 || { cat pki/pki.out >&2; die "sknock pki failed"; }
info "PKI in pki/: CA, server \"gatekeeper\", client \"alice\" allowed tcp/$PORT, empty CRL"
shown "sknock pki init --dir pki"
shown "sknock pki server --dir pki --name gatekeeper --password-file pki/password"
shown "sknock pki client --dir pki --name alice --allow tcp/$PORT --password-file pki/password"
shown "sknock pki crl --dir pki"

# ---------------------------------------------------------------- service
# The service and sknockd run in a session of their own (setsid), so a
# Ctrl-C reaches only this script and its foreground command; the cleanup
# then stops them in order.
setsid ip netns exec "$SRV" "$WORK/bin/sknock-demo-service" "$SERVER_IP:$PORT" >service.log 2>&1 8>&- 9>&- &
SERVICE_PID=$!
for _ in $(seq 50); do
	grep -q listening service.log 2>/dev/null && break
	alive "$SERVICE_PID" || die "the demo service did not start: $(cat service.log)"
	pause 0.1
done
reply=$(connect) || die "the service does not answer even without sknockd: $reply"
info "service on $SERVER_IP:$PORT answers the client while unguarded: \"$reply\""

# ---------------------------------------------------------------- sknockd
# The shipped config.yaml with only what the demo needs changed.
awk -v pkcs12="$WORK/pki/gatekeeper.pfx" -v pass="$WORK/pki/password" \
	-v crl="$WORK/pki/ca.crl" -v port="$PORT" -v open="$OPEN_FOR" -v work="$WORK" -v ctl="$CTL" '
	function set(v) {
		$0 = substr($0, 1, index($0, ":")) " " v
		done[k]++
	}
	/^[a-z0-9_]+:/ { sec = substr($0, 1, index($0, ":") - 1) }
	/^  [a-z0-9_]+:/ {
		k = sec "." substr($1, 1, length($1) - 1)
		if (k == "server.pkcs12") set("\"" pkcs12 "\"")
		else if (k == "server.password_file") set("\"" pass "\"")
		else if (k == "crl.file") set("\"" crl "\"")
		else if (k == "gate.protect") set("[tcp/" port "]")
		else if (k == "gate.policy") set("reject")
		else if (k == "gate.open_duration") set(open)
		else if (k == "knock.replay_file") set("\"" work "/replay\"")
		else if (k == "control.socket") set("\"" ctl "/control.sock\"")
	}
	{ print }
	END {
		n = split("server.pkcs12 server.password_file crl.file gate.protect gate.policy gate.open_duration knock.replay_file control.socket", want, " ")
		for (i = 1; i <= n; i++) if (done[want[i]] != 1) {
			print "config.yaml: key " want[i] " not found exactly once" > "/dev/stderr"
			exit 1
		}
	}' "$ROOT/config.yaml" >config.yaml || die "could not derive the demo config from $ROOT/config.yaml"
info "config.yaml: the shipped one with server.pkcs12, server.password_file and crl.file in the"
info "  sandbox, gate.protect [tcp/$PORT], gate.policy reject, gate.open_duration $OPEN_FOR,"
info "  knock.replay_file and control.socket in the sandbox too"
check=$(sknockd --config config.yaml --check 2>&1) || { echo "$check" | indent >&2; die "sknockd --check refused the demo config"; }
shown "sknockd --config config.yaml --check"
echo "$check" | indent

setsid ip netns exec "$SRV" "$WORK/bin/sknockd" --config "$WORK/config.yaml" 2>>"$WORK/sknockd.log" >&2 8>&- 9>&- &
DAEMON_PID=$!
wait_log '"msg":"sknockd started"' 15 || die "sknockd did not start within 15 s"
info "sknockd running in $SRV (pid $DAEMON_PID), JSON log in sknockd.log"

KNOCK=(sknock knock --pkcs12 pki/alice.pfx --server-cert pki/gatekeeper.pem --password-file pki/password)

# ---------------------------------------------------------------- 1
step 1 "the service is hidden from the client"
shown "(client) connect to $SERVER_IP:$PORT"
if reply=$(connect); then
	die "the client reached the service without knocking: $reply"
fi
echo "$reply" | tail -n 1 | indent
ok "refused at once, exactly as a closed port answers (gate.policy reject)"

# ---------------------------------------------------------------- 2
step 2 "alice knocks from the client namespace"
shown "(client) ${KNOCK[*]} $SERVER_IP tcp/$PORT"
if ! out=$(ip netns exec "$CLI" timeout --foreground 30 "${KNOCK[@]}" "$SERVER_IP" "tcp/$PORT" 2>&1); then
	echo "$out" | indent
	die "sknock knock failed"
fi
echo "$out" | indent
ok "sknock knock exited 0: the port is open for $CLIENT_IP for $OPEN_FOR"

# ---------------------------------------------------------------- 3
step 3 "the service is reachable"
shown "(client) connect to $SERVER_IP:$PORT"
reply=$(connect) || die "the service is still hidden after the knock: $reply"
echo "$reply" | indent
ok "connected"

# ---------------------------------------------------------------- 4
step 4 "sknockd logged its decision"
shown "grep '\"msg\":\"knock\"' sknockd.log"
wait_log '"verdict":"grant"' 5 || die "no grant in sknockd's log"
grep -F '"msg":"knock"' sknockd.log | grep -F '"verdict":"grant"' | tail -n 1 | indent

# ---------------------------------------------------------------- 5
step 5 "alice's certificate is revoked, and her next knock refused"
shown "sknock pki revoke --dir pki --name alice && sknock pki crl --dir pki"
out=$({ sknock pki revoke --dir pki --name alice && sknock pki crl --dir pki; } 2>&1) ||
	{ echo "$out" | indent; die "revoking alice failed"; }
[ -z "$out" ] || echo "$out" | indent
shown "kill -HUP $DAEMON_PID    # sknockd re-reads the CRL"
kill -HUP "$DAEMON_PID"
wait_log '"msg":"trust reloaded (SIGHUP)"' 10 || die "sknockd did not log \"trust reloaded\" after SIGHUP"
grep -F '"msg":"trust reloaded (SIGHUP)"' sknockd.log | tail -n 1 | indent
grep -F '"msg":"trust reloaded (SIGHUP)"' sknockd.log | tail -n 1 | grep -qF '"crl_revoked":1' ||
	die "the reloaded CRL does not list alice"
# A grant is for a source address and outlives a revocation (connections
# made under it go on); wait for it to run out before knocking again.
t0=$SECONDS
deadline=$((SECONDS + 20))
while reply=$(connect); do
	alive "$DAEMON_PID" || die "sknockd exited"
	[ "$SECONDS" -lt "$deadline" ] || die "the grant did not run out within 20 s"
	pause 0.5
done
info "alice's earlier grant ran out after $OPEN_FOR; new connections are refused again (waited $((SECONDS - t0)) s)"
shown "(client) ${KNOCK[*]} --retries 0 --timeout 2s $SERVER_IP tcp/$PORT"
set +e
out=$(ip netns exec "$CLI" timeout --foreground 30 "${KNOCK[@]}" --retries 0 --timeout 2s "$SERVER_IP" "tcp/$PORT" 2>&1)
status=$?
set -e
echo "$out" | indent
[ "$status" -ne 0 ] || die "sknock knock succeeded with a revoked certificate"
ok "sknock knock exited $status: the port stayed closed"
shown "grep '\"reason\":\"revoked\"' sknockd.log"
wait_log '"reason":"revoked"' 5 || die "sknockd did not log a knock refused as revoked"
grep -F '"msg":"knock"' sknockd.log | grep -F '"reason":"revoked"' | tail -n 1 | indent
reply=$(connect) && die "the service answered a revoked client: $reply"
ok "the service is still hidden from alice"

echo

exit 0
}
