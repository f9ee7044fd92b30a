#!/usr/bin/env bash
# Bench row 3b (a SYN flood from a granted source) for several builds of
# sknockd, alternated in the same network namespaces, so that the machine's
# drift falls on every build alike. As root:
#
#   sudo scripts/gate-ab.sh old=/tmp/old-bin new=/tmp/new-bin
#   sudo ROUNDS=7 FLOOD_N=300000 scripts/gate-ab.sh a=DIR b=DIR c=DIR
#
# Each DIR holds a build's sknockd and sknock (CGO_ENABLED=0 go build -o
# DIR/ ./cmd/sknockd ./cmd/sknock, in that build's tree). Each run starts
# the build's sknockd (policy drop, replay file, tcp/2000-2299
# protected), knocks for tcp/2261 from cli, floods 2261 with FLOOD_N SYNs
# from random source ports (trafgen; no listener: the kernel answers each
# accepted SYN with a RST) and prints the gate's verdicts per second
# (sknockbench qrate, as bench.sh's row 3b) and sknockd's CPU time (every
# thread) per handled packet; the last lines are each build's medians
# and their ratio to the first build's. A variable NAME_ENV (e.g.
# new_ENV="GODEBUG=gctrace=1") sets environment for one build's sknockd.
#
# Namespaces and addresses: 198.18.0.1 (srv) and 198.18.0.2 (cli), made
# and deleted here; each flood is bounded in packets and in time.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
ROUNDS=${ROUNDS:-5}
FLOOD_N=${FLOOD_N:-200000}
[ "$(id -u)" -eq 0 ] || { echo "gate-ab.sh: run as root" >&2; exit 1; }
[ $# -ge 1 ] || { echo "usage: gate-ab.sh NAME=BINDIR [NAME=BINDIR ...]" >&2; exit 2; }
command -v trafgen >/dev/null || { echo "gate-ab.sh: trafgen is not installed (apt-get install netsniff-ng)" >&2; exit 1; }
names=()
declare -A dirs
for a in "$@"; do
  n=${a%%=*} d=${a#*=}
  [[ "$n" =~ ^[A-Za-z0-9_]+$ && -x "$d/sknockd" && -x "$d/sknock" ]] || { echo "gate-ab.sh: $a: want NAME=DIR with DIR/sknockd and DIR/sknock" >&2; exit 2; }
  names+=("$n"); dirs[$n]=$d
done

W=$(mktemp -d /tmp/sknock-gate-ab.XXXXXX)
SRV=sknab-srv-$$ CLI=sknab-cli-$$
SRV_IP=198.18.0.1 CLI_IP=198.18.0.2
cleanup() {
  set +e
  for ns in "$SRV" "$CLI"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
in_srv() { ip netns exec "$SRV" "$@"; }
in_cli() { ip netns exec "$CLI" "$@"; }

CGO_ENABLED=0 go build -o "$W/" ./internal/bench/sknockbench
first=${dirs[${names[0]}]}
PKI=$W/pki PW=$W/pki/pass
mkdir -p "$PKI"; echo gate-ab > "$PW"
"$first/sknock" pki init --dir "$PKI" >/dev/null
"$first/sknock" pki server --dir "$PKI" --name gatekeeper --password-file "$PW" >/dev/null
"$first/sknock" pki client --dir "$PKI" --name c0 --allow tcp/2261 --password-file "$PW" >/dev/null
"$first/sknock" pki crl --dir "$PKI" >/dev/null

for ns in "$SRV" "$CLI"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add vc netns "$SRV" type veth peer name veth0 netns "$CLI"
ip -n "$SRV" addr add $SRV_IP/24 dev vc
ip -n "$CLI" addr add $CLI_IP/24 dev veth0
ip -n "$SRV" link set vc up; ip -n "$CLI" link set veth0 up
SRV_MAC=$(ip -n "$SRV" -br link show vc | awk '{print $3}')
CLI_MAC=$(ip -n "$CLI" -br link show veth0 | awk '{print $3}')
cat > "$W/syn.cfg" <<EOC
{
  eth(da=$SRV_MAC, sa=$CLI_MAC),
  ipv4(sa=$CLI_IP, da=$SRV_IP, ttl=64, df),
  tcp(sp=drnd(1024, 65535), dp=2261, seq=drnd(), syn, win=64240)
}
EOC

# cpu_ns PID: the CPU time of every thread of PID, in nanoseconds.
cpu_ns() { local s=0 f; for f in /proc/"$1"/task/*/schedstat; do s=$((s + $(cut -d' ' -f1 "$f"))); done; echo "$s"; }
declare -A rates
for r in $(seq "$ROUNDS"); do
  for n in "${names[@]}"; do
    d=${dirs[$n]} env_var=${n}_ENV
    cat > "$W/$n.yaml" <<EOC
server:
  pkcs12: $PKI/gatekeeper.pfx
  password_file: $PW
crl:
  file: $PKI/ca.crl
knock:
  ports: "40000:40100"
  timestamp_tolerance: 60s
  replay_file: $W/replay-$n
gate:
  protect: [tcp/2000-2299]
  always_allow: [tcp/22]
  open_duration: 120s
  policy: drop
log:
  level: info
control:
  socket: $W/control.sock
EOC
    : > "$W/$n.log"
    env ${!env_var:-} ip netns exec "$SRV" "$d/sknockd" --config "$W/$n.yaml" 2>>"$W/$n.log" & pid=$!
    for _ in $(seq 100); do grep -q '"sknockd started"' "$W/$n.log" && break; sleep 0.1; done
    grep -q '"sknockd started"' "$W/$n.log" || { echo "gate-ab.sh: $n's sknockd did not start:" >&2; cat "$W/$n.log" >&2; exit 1; }
    in_cli "$d/sknock" knock --pkcs12 "$PKI/c0.pfx" --server-cert "$PKI/gatekeeper.pem" --password-file "$PW" \
      --knock-port 40000 --no-verify -q $SRV_IP tcp/2261
    sleep 0.3
    rm -f "$W/ready"
    in_srv "$W/sknockbench" qrate -queue 101 -iface vc -prefix q -ready "$W/ready" -for 30s > "$W/q.kv" & q=$!
    for _ in $(seq 50); do [ -e "$W/ready" ] && break; sleep 0.05; done
    c0=$(cpu_ns "$pid")
    timeout 30 ip netns exec "$CLI" trafgen --dev veth0 --cpus 1 -n "$FLOOD_N" --conf "$W/syn.cfg" -q >/dev/null 2>&1 || true
    wait "$q" || true
    c1=$(cpu_ns "$pid")
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    in_srv "$d/sknockd" --config "$W/$n.yaml" --rules-script remove 2>/dev/null | in_srv sh >/dev/null 2>&1 || true
    rate=$(sed -n 's/^q_rate=//p' "$W/q.kv") handled=$(sed -n 's/^q_handled=//p' "$W/q.kv")
    printf '%s round %d %-8s %8s verdicts/s  %6s ns CPU/packet\n' "$(date -u +%T)" "$r" "$n" "${rate:-n/a}" \
      "$( [ "${handled:-0}" -gt 0 ] && echo $(( (c1 - c0) / handled )) || echo n/a)"
    rates[$n]="${rates[$n]:-} ${rate:-0}"
  done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
base=$(echo "${rates[${names[0]}]}" | median)
for n in "${names[@]}"; do
  m=$(echo "${rates[$n]}" | median)
  printf 'median %-8s %8s verdicts/s  %s× %s\n' "$n" "$m" "$(awk "BEGIN {printf \"%.2f\", $m/$base}")" "${names[0]}"
done
