#!/usr/bin/env bash
# Soak and chaos: sknock under an hour (SOAK_SECONDS) of mixed real use,
# faults and attacks, as root, in network namespaces this script makes
# and deletes (also on failure and Ctrl-C). Then a table of what was
# measured, and the last line "soak: PASS" or "soak: FAIL (invariants)";
# the exit status is 0 only on PASS.
#
#   sudo scripts/soak.sh                    one hour
#   sudo SOAK_SECONDS=120 scripts/soak.sh   two minutes (CI: scripts/test.sh)
#   sudo SOAK_FAULT=fd SOAK_SECONDS=90 scripts/soak.sh
#                                           with a fault injected: must FAIL
#                                           (scripts/soak-faults.sh runs them all)
#
# What runs at once (internal/soak, one process per namespace):
# - 56 clients (sknock pki certificates): 6 namespaces of 8 clients on
#   IPv4 and IPv6, and 8 clients in two LAN namespaces behind a MASQUERADE
#   router whose LAN is 198.18.10.0/24. Clients sharing an address have
#   disjoint ports. Each knocks with the real `sknock knock` (v1, and v2
#   when the client offers --protocol) at random intervals, checks that
#   its TCP and UDP ports open (byte-exact echo), and a third of them keep
#   a connection open for minutes, echoing and checking every byte.
# - an ungranted prober trying every protected port from 6 addresses;
# - faults: SIGHUP every 5 s alternating two configs (tcp/5050 protected
#   in a, udp/6050 in b) and now and then an invalid one; another tool
#   flushing or outranking sknock's mangle rules every 30 s; a CRL
#   revoking a client and a reissued certificate for it every minute,
#   published by file (+ SIGHUP) and by crl.url (served from a namespace)
#   in turn; `sknock grants revoke --serial`; SYN, garbage-knock and
#   replayed-knock floods from spoofed sources in bursts; and, in the chaos
#   phase only, a restart (SIGTERM + start) every 2 minutes and a kill -9
#   + start every 10 minutes.
#
# Two phases: leak (60 %, no restarts; heap, descriptors and goroutines
# sampled, their growth judged from per-bucket minima) and chaos (40 %).
# Intervals scale down with SOAK_SECONDS so a 120 s run sees every fault.
# Every flood is bounded in packets and time; every process by -for.
# Addresses: 198.18.0.0/15 and fd00:5e::/64 only, inside the namespaces.
set -euo pipefail
export LC_ALL=C
{

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export HOME="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
export PATH="$PATH:/usr/local/go/bin:$HOME/go/bin:/usr/sbin:/sbin"
export GOWORK=off

SOAK_SECONDS=${SOAK_SECONDS:-3600}
SOAK_FAULT=${SOAK_FAULT:-}        # see soak_fault_* below and scripts/soak-faults.sh
SOAK_WATCHDOG=${SOAK_WATCHDOG:-20} # WatchdogSec the soak plays systemd with
OUT=${OUT:-}                       # also write the table to this file
FLOOD_RATE=${FLOOD_RATE:-4000}     # packets per second of each flood burst
FLOOD_SECONDS=${FLOOD_SECONDS:-5}

[ "$(id -u)" -eq 0 ] || { echo "soak.sh: run as root (sudo scripts/soak.sh)" >&2; exit 1; }
command -v go >/dev/null || { echo "soak.sh: Go is not installed (need Go 1.26)" >&2; exit 1; }
[[ "$SOAK_SECONDS" =~ ^[0-9]+$ && "$SOAK_SECONDS" -ge 60 ]] || { echo "soak.sh: SOAK_SECONDS must be at least 60" >&2; exit 2; }
for m in nfnetlink_queue xt_NFQUEUE nf_conntrack xt_conntrack xt_mark xt_length xt_hashlimit xt_connmark xt_statistic xt_MASQUERADE iptable_nat iptable_raw ip6table_raw iptable_mangle ip6table_mangle veth bridge; do
  modprobe -q "$m" 2>/dev/null || true
done

W=$(mktemp -d /tmp/sknock-soak.XXXXXX)
chmod 755 "$W"
BIN=$W/bin EV=$W/events PKI=$W/pki GEN=$W/gen STATE=$W/state WWW=$W/www
mkdir -p "$BIN" "$EV" "$PKI" "$GEN" "$STATE" "$WWW"
PW=$PKI/pass
TAG=$$
NSS=()      # namespaces made
BG=()       # background processes started
DAEMON_PID=

log() { echo "soak: $(date -u +%H:%M:%S) $*" >&2; }

cleanup() {
  set +e
  for p in "${BG[@]}"; do kill "$p" 2>/dev/null; done
  [ -n "$DAEMON_PID" ] && kill -9 "$DAEMON_PID" 2>/dev/null
  for ns in "${NSS[@]}"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  done
  for ns in "${NSS[@]}"; do ip netns del "$ns" 2>/dev/null; done
  if [ -n "${KEEP:-}" ]; then echo "soak.sh: work files kept in $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# event KIND [key=value...]: one event line from the script, now.
event() {
  local kind=$1; shift
  local line="{\"t\":$(date +%s.%N),\"kind\":\"$kind\""
  local kv k v
  for kv in "$@"; do
    k=${kv%%=*} v=${kv#*=}
    if [[ "$v" =~ ^-?[0-9]+(\.[0-9]+)?$ ]]; then line+=",\"$k\":$v"; else line+=",\"$k\":\"$v\""; fi
  done
  echo "$line}" >> "$EV/script.events"
}

# ---- timing: phases and fault intervals scale with SOAK_SECONDS ------------------
LEAK=$((SOAK_SECONDS * 6 / 10))
CHAOS=$((SOAK_SECONDS - LEAK))
imin() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }
HUP_EVERY=5
FLUSH_EVERY=$(imin 30 $((LEAK / 3)))
CRL_EVERY=$(imin 60 $((LEAK / 2)))
GRANTS_EVERY=$(imin 45 $((LEAK / 2)))
FLOOD_EVERY=$(imin 300 $((LEAK / 2)))
RESTART_EVERY=$(imin 120 $((CHAOS / 3)))
KILL_EVERY=$(imin 600 $((CHAOS / 2)))
SAMPLE_EVERY=2   # heap minima need samples near a GC's end
HOLD_MIN=$(imin 60 $((SOAK_SECONDS / 8)))s HOLD_MAX=$(imin 300 $((SOAK_SECONDS / 3)))s
LIMIT=$((SOAK_SECONDS + 120))s   # every process's own bound

# ---- build -------------------------------------------------------------------------
tags=
case "$SOAK_FAULT" in fd|heap|goroutine|log) tags="-tags soakfault" ;; esac
log "building ($SOAK_SECONDS s soak${SOAK_FAULT:+, fault $SOAK_FAULT})"
CGO_ENABLED=0 go build $tags -o "$BIN/" ./cmd/sknockd
CGO_ENABLED=0 go build -o "$BIN/" ./cmd/sknock ./internal/soak/cmd/soak ./internal/bench/sknockbench
SK=$BIN/sknock SOAK=$BIN/soak
PROTOCOLS=
if "$SK" knock --help 2>&1 | grep -q -- '-protocol'; then PROTOCOLS=1,2; fi

# ---- PKI: 56 clients ------------------------------------------------------------------
log "PKI: CA, gatekeeper, 56 clients"
echo soak-password > "$PW"
"$SK" pki init --dir "$PKI" >/dev/null
"$SK" pki server --dir "$PKI" --name gatekeeper --password-file "$PW" >/dev/null
SERVER_CERT=$PKI/gatekeeper.pem
# issue NAME J: a certificate for client NAME allowed tcp/500J and udp/600J,
# its bundle kept as generation GEN, named in $GEN/NAME.cur.
declare -A GENOF
issue() {
  local name=$1 j=$2 g=$(( ${GENOF[$1]:-0} + 1 ))
  "$SK" pki client --dir "$PKI" --name "$name" --allow "tcp/$((5000 + j)),udp/$((6000 + j))" --password-file "$PW" >/dev/null
  cp "$PKI/$name.pfx" "$GEN/$name.g$g.pfx"
  echo "$g $GEN/$name.g$g.pfx" > "$GEN/$name.cur.tmp" && mv "$GEN/$name.cur.tmp" "$GEN/$name.cur"
  GENOF[$name]=$g
}
serial_of() { openssl x509 -in "$PKI/$1.pem" -noout -serial | sed 's/serial=/0x/'; }
DIRECT_NS=6
for n in $(seq 1 $DIRECT_NS); do for j in $(seq 0 7); do issue "c${n}x$j" "$j"; done; done
for j in 0 1 2 3; do issue "l1x$j" "$j"; done
for j in 4 5 6 7; do issue "l2x$j" "$j"; done
"$SK" pki crl --dir "$PKI" >/dev/null
cp "$PKI/ca.crl" "$STATE/ca.crl"; cp "$PKI/ca.crl" "$WWW/ca.crl"
# Revoked by CRL in turn (and reissued), and by `grants revoke --serial`.
CRL_VICTIMS=(c2x7 c1x7 c4x7 c3x7 l2x7 c5x7 c6x7)   # quiet holders (odd) between the others
GRANT_VICTIMS=(c1x6 c2x6 c3x6 c4x6 c5x6 c6x6 l2x6)

# ---- namespaces ------------------------------------------------------------------------
# srv holds the bridge br0 (198.18.0.1/24, fd00:5e::1/64); every other
# namespace has one veth on it. rtr masquerades lan1 and lan2 (198.18.10.0/24).
SRV=sks-srv-$TAG RTR=sks-rtr-$TAG PRB=sks-prb-$TAG MAL=sks-mal-$TAG CA=sks-ca-$TAG
mkns() { ip netns add "$1"; NSS+=("$1"); ip -n "$1" link set lo up; }
# attach NS IFNAME ADDR4 [ADDR6]: a veth from NS to srv's bridge.
attach() {
  local ns=$1 peer=$2
  ip link add "$peer" netns "$SRV" type veth peer name eth0 netns "$ns"
  ip -n "$SRV" link set "$peer" master br0 up
  ip -n "$ns" addr add "$3/24" dev eth0
  [ -n "${4:-}" ] && ip -n "$ns" addr add "$4/64" dev eth0 nodad
  ip -n "$ns" link set eth0 up
}
log "namespaces"
mkns "$SRV"
ip -n "$SRV" link add br0 type bridge
ip -n "$SRV" addr add 198.18.0.1/24 dev br0
ip -n "$SRV" addr add fd00:5e::1/64 dev br0 nodad
ip -n "$SRV" link set br0 up
ip netns exec "$SRV" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 net.ipv4.conf.br0.rp_filter=0
for n in $(seq 1 $DIRECT_NS); do mkns "sks-c$n-$TAG"; attach "sks-c$n-$TAG" "vc$n" "198.18.0.$((10 + n))" "fd00:5e::$((10 + n))"; done
mkns "$PRB"; attach "$PRB" vprb 198.18.0.200 fd00:5e::200
for a in 201 202 203; do ip -n "$PRB" addr add 198.18.0.$a/24 dev eth0; done
ip -n "$PRB" addr add fd00:5e::201/64 dev eth0 nodad
mkns "$MAL"; attach "$MAL" vmal 198.18.0.66
mkns "$CA"; attach "$CA" vca 198.18.0.250
mkns "$RTR"; attach "$RTR" vrtr 198.18.0.100
ip -n "$RTR" link add lan0 type bridge
ip -n "$RTR" addr add 198.18.10.1/24 dev lan0
ip -n "$RTR" link set lan0 up
ip netns exec "$RTR" sysctl -qw net.ipv4.ip_forward=1
ip netns exec "$RTR" iptables -t nat -A POSTROUTING -s 198.18.10.0/24 -o eth0 -j MASQUERADE
for l in 1 2; do
  ns=sks-lan$l-$TAG; mkns "$ns"
  ip link add "vl$l" netns "$RTR" type veth peer name eth0 netns "$ns"
  ip -n "$RTR" link set "vl$l" master lan0 up
  ip -n "$ns" addr add "198.18.10.$((10 + l))/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via 198.18.10.1
done

# ---- configurations ---------------------------------------------------------------------
# a protects tcp/5050 and not udp/6050; b the other way round. The knock
# rate limit is raised from the shipped 20/second: it counts IPv6 sources
# per /64, and the 48 IPv6 clients here share fd00:5e::/64 (at 20/s with
# a burst of 5, one knock in a few hundred was dropped by the kernel).
PROTECT_COMMON="tcp/5000-5007, udp/6000-6007"
PROTECT_A="$PROTECT_COMMON, tcp/5050" PROTECT_B="$PROTECT_COMMON, udp/6050"
CONF=$W/sknockd.yaml
write_config() { # write_config FILE PROTECT
  cat > "$1" <<EOF
server:
  pkcs12: $PKI/gatekeeper.pfx
  password_file: $PW
crl:
  file: $STATE/ca.crl
  url: http://198.18.0.250:8080/ca.crl
  refresh: 1s
knock:
  ports: "40000:40999"
  replay_file: $STATE/replay
  rate_limit: "200/second"
  timestamp_tolerance: 7s
gate:
  protect: [$2]
  always_allow: [tcp/22]
  open_duration: 15s
  policy: drop
log:
  level: info
metrics:
  listen: 127.0.0.1:9466
control:
  socket: $W/control.sock
EOF
}
write_config "$W/a.yaml" "$PROTECT_A"
write_config "$W/b.yaml" "$PROTECT_B"
write_config "$W/invalid.yaml" "$PROTECT_A, tcp/not-a-port"
cp "$W/a.yaml" "$CONF"; CONF_NAME=a
"$BIN/sknockd" --config "$W/a.yaml" --check >/dev/null 2>&1 || { "$BIN/sknockd" --config "$W/a.yaml" --check; exit 1; }
"$BIN/sknockd" --config "$W/b.yaml" --check >/dev/null 2>&1 || { "$BIN/sknockd" --config "$W/b.yaml" --check; exit 1; }
if "$BIN/sknockd" --config "$W/invalid.yaml" --check >/dev/null 2>&1; then echo "soak.sh: the invalid config passed --check" >&2; exit 1; fi

# ---- services and sknockd ------------------------------------------------------------------
DLOG=$W/sknockd.log; : > "$DLOG"
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
bg() { "$@" & BG+=($!); }
ECHO_FAULT=; case "$SOAK_FAULT" in corrupt|cut) ECHO_FAULT=$SOAK_FAULT ;; esac
bg in_ns "$SRV" "$SOAK" echo -tcp 5000-5007,5050 -udp 6000-6007,6050 -fault "$ECHO_FAULT" -fault-after 15s -for "$LIMIT"
bg in_ns "$CA" "$SOAK" crlserve -dir "$WWW" -listen 198.18.0.250:8080 -for "$LIMIT"
bg "$SOAK" notify -socket "$W/notify.sock" -events "$EV/notify.events" -for "$LIMIT"

started() { grep -c '"sknockd started"' "$DLOG" || true; }
start_daemon() {
  local before; before=$(started)
  event start name="$CONF_NAME"
  DFAULT=; case "$SOAK_FAULT" in fd|heap|goroutine|log) DFAULT=$SOAK_FAULT ;; esac
  # forget-conns: each start without the previous run's connection record.
  [ "$SOAK_FAULT" = forget-conns ] && rm -f "$STATE/replay.conns"
  # GOGC=25: a GC for every quarter of the live heap allocated, so that
  # each bucket of the leak window holds several marks of the live heap
  # (the analyzer reads it as next_gc/1.25); at the default 100 a quiet
  # minute may hold none, and one GC that caught a flood in flight
  # stands for the whole bucket.
  GOGC=25 NOTIFY_SOCKET=$W/notify.sock WATCHDOG_USEC=$((SOAK_WATCHDOG * 1000000)) SKNOCK_SOAK_FAULT=$DFAULT \
    ip netns exec "$SRV" "$BIN/sknockd" --config "$CONF" 2>>"$DLOG" &
  DAEMON_PID=$!
  for _ in $(seq 600); do   # 30 s: a loaded machine can be slow
    if [ "$(started)" -gt "$before" ]; then event ready; return 0; fi
    kill -0 "$DAEMON_PID" 2>/dev/null || break
    sleep 0.05
  done
  log "sknockd did not start:"; tail -n 20 "$DLOG" >&2; exit 1
}
stop_daemon() { # stop_daemon TERM|KILL
  [ "$1" = KILL ] && event kill || event stop
  kill "-$1" "$DAEMON_PID" 2>/dev/null || true
  wait "$DAEMON_PID" 2>/dev/null || true
  DAEMON_PID=
}
# try CMD...: a fault's command; its failure is logged, not fatal.
try() { "$@" >/dev/null 2>&1 || log "fault command failed: $*"; }

log "sknockd"
start_daemon
bg in_ns "$SRV" "$SOAK" sample -every "${SAMPLE_EVERY}s" -log "$DLOG" -events "$EV/sample.events" -for "$LIMIT"

# ---- clients and prober -----------------------------------------------------------------------
# spec FILE CLIENT...: the clients of one namespace as JSON (soak.Client).
spec() {
  local file=$1; shift
  local first=1 c j hosts src hold
  echo "[" > "$file"
  for c in "$@"; do
    j=${c##*x}
    hosts='"198.18.0.1","fd00:5e::1"' src=
    case "$c" in l*) hosts='"198.18.0.1"' src=198.18.0.100 ;; esac
    hold=false; case "$j" in 0|6|7) hold=true ;; esac
    # Quiet holders (c1x7, c3x7, c5x7) knock once per held connection:
    # their grant is long over when the CRL revokes them.
    quiet=false; case "$c" in c1x7|c3x7|c5x7) quiet=true ;; esac
    [ $first = 1 ] || echo "," >> "$file"; first=0
    printf '{"name":"%s","current":"%s","hosts":[%s],"tcp":[%d],"udp":[%d],"source_ip":"%s","hold":%s,"quiet":%s}\n' \
      "$c" "$GEN/$c.cur" "$hosts" $((5000 + j)) $((6000 + j)) "$src" "$hold" "$quiet" >> "$file"
  done
  echo "]" >> "$file"
}
CLIENT_PIDS=()
client_ns() { # client_ns NS SPECFILE
  bg in_ns "$1" "$SOAK" clients -spec "$2" -events "$EV/$(basename "$2" .json).events" -sknock "$SK" \
    -server-cert "$SERVER_CERT" -password-file "$PW" -knock-ports 40000-40999 -protocols "$PROTOCOLS" \
    -min-gap 3s -max-gap 12s -hold-min "$HOLD_MIN" -hold-max "$HOLD_MAX" -for "$LIMIT"
  CLIENT_PIDS+=($!)
}
log "clients (${PROTOCOLS:+protocols $PROTOCOLS, }56 certificates) and prober"
for n in $(seq 1 $DIRECT_NS); do
  spec "$W/c$n.json" $(for j in $(seq 0 7); do echo "c${n}x$j"; done)
  client_ns "sks-c$n-$TAG" "$W/c$n.json"
done
spec "$W/l1.json" l1x0 l1x1 l1x2 l1x3; client_ns "sks-lan1-$TAG" "$W/l1.json"
spec "$W/l2.json" l2x4 l2x5 l2x6 l2x7; client_ns "sks-lan2-$TAG" "$W/l2.json"
bg in_ns "$PRB" "$SOAK" prober -sources 198.18.0.200,198.18.0.201,198.18.0.202,198.18.0.203,fd00:5e::200,fd00:5e::201 \
  -targets 198.18.0.1,fd00:5e::1 -tcp 5000-5007,5050 -udp 6000-6007,6050 -events "$EV/prober.events" -for "$LIMIT"

# ---- faults ---------------------------------------------------------------------------------
NHUP=0 LAST_HUP=0
fault_reload() {
  NHUP=$((NHUP + 1)) LAST_HUP=$SECONDS
  if [ $((NHUP % 7)) = 0 ]; then
    # An invalid file: refused whole; the valid one goes back at once.
    local refused; refused=$(grep -c 'reload refused' "$DLOG" || true)
    cp "$W/invalid.yaml" "$CONF.tmp" && mv "$CONF.tmp" "$CONF"
    event reload name=invalid
    kill -HUP "$DAEMON_PID"
    for _ in $(seq 60); do [ "$(grep -c 'reload refused' "$DLOG" || true)" -gt "$refused" ] && break; sleep 0.05; done
    cp "$W/$CONF_NAME.yaml" "$CONF.tmp" && mv "$CONF.tmp" "$CONF"
    return
  fi
  [ "$CONF_NAME" = a ] && CONF_NAME=b || CONF_NAME=a
  cp "$W/$CONF_NAME.yaml" "$CONF.tmp" && mv "$CONF.tmp" "$CONF"
  event reload name="$CONF_NAME"
  kill -HUP "$DAEMON_PID"
}
NFLUSH=0
fault_flush() {
  NFLUSH=$((NFLUSH + 1))
  # The event goes first: the window it opens starts before the command.
  case $((NFLUSH % 4)) in
    1) event flush name=flush-prerouting-v4; try in_ns "$SRV" iptables -t mangle -F PREROUTING ;;
    2) event flush name=outrank-v6; try in_ns "$SRV" ip6tables -t mangle -I PREROUTING 1 -j ACCEPT ;;
    3) event flush name=flush-chain-v4; try in_ns "$SRV" iptables -t mangle -F SKNOCK ;;
    0) event flush name=outrank-v4; try in_ns "$SRV" iptables -t mangle -I PREROUTING 1 -p tcp -j ACCEPT ;;
  esac
}
NCRL=0 CRL_PENDING=
# fault_crl: revoke the next victim's certificate and publish the CRL, by
# file (+ SIGHUP) and by crl.url in turn; half a period later reissue it.
publish_crl() { # publish_crl MODE
  "$SK" pki crl --dir "$PKI" >/dev/null
  if [ "$1" = crl-file ]; then
    cp "$PKI/ca.crl" "$STATE/ca.crl.tmp" && mv "$STATE/ca.crl.tmp" "$STATE/ca.crl"
    LAST_HUP=$SECONDS
    kill -HUP "$DAEMON_PID"
    cp "$PKI/ca.crl" "$WWW/ca.crl.tmp" && mv "$WWW/ca.crl.tmp" "$WWW/ca.crl"
  else
    cp "$PKI/ca.crl" "$WWW/ca.crl.tmp" && mv "$WWW/ca.crl.tmp" "$WWW/ca.crl"
  fi
}
fault_crl() {
  local victim=${CRL_VICTIMS[$((NCRL % ${#CRL_VICTIMS[@]}))]} mode=crl-file
  [ $((NCRL % 2)) = 1 ] && mode=crl-url
  NCRL=$((NCRL + 1))
  "$SK" pki revoke --dir "$PKI" --name "$victim" >/dev/null
  if [ "$SOAK_FAULT" = late-revoke ]; then
    # The fault: the revocation is announced, its CRL published 5 s late.
    event revoke client="$victim" gen="${GENOF[$victim]}" name="$mode"
    sleep 5; publish_crl "$mode"
  else
    publish_crl "$mode"
    event revoke client="$victim" gen="${GENOF[$victim]}" name="$mode"
  fi
  CRL_PENDING="$victim $mode"
}
fault_reissue() {
  [ -n "$CRL_PENDING" ] || return 0
  set -- $CRL_PENDING
  local j=${1##*x}
  issue "$1" "$j"
  event reissue client="$1" gen="${GENOF[$1]}"
  CRL_PENDING=
}
NGRANT=0
fault_grants_revoke() {
  local victim=${GRANT_VICTIMS[$((NGRANT % ${#GRANT_VICTIMS[@]}))]}
  NGRANT=$((NGRANT + 1))
  local serial; serial=$(serial_of "$victim")
  # Recorded with the grants sknockd said it ended, only if it answered.
  try in_ns "$SRV" "$SOAK" revoke -events "$EV/script.events" -client "$victim" -gen "${GENOF[$victim]}" -- \
    "$SK" grants revoke --serial "$serial" --socket "$W/control.sock" --json
}
NFLOOD=0
fault_flood() {
  local kind
  case $((NFLOOD % 3)) in
    0) kind=syn ;; 1) kind=random ;; 2) kind=replay ;;
  esac
  NFLOOD=$((NFLOOD + 1))
  local n=$((FLOOD_RATE * FLOOD_SECONDS)) args=(-kind "$kind" -dst 198.18.0.1 -rate "$FLOOD_RATE" -n "$n" -for "${FLOOD_SECONDS}s" -prefix flood)
  case $kind in
    syn) args+=(-knock-ports 5003-5003) ;;
    random) args+=(-knock-ports 40000-40999) ;;
    replay) args+=(-knock-ports 40000-40999 -pfx "$GEN/c1x1.g1.pfx" -password-file "$PW" -server-cert "$SERVER_CERT" -names 198.18.0.66) ;;
  esac
  event flood name="$kind" dur="$FLOOD_SECONDS"
  bg in_ns "$MAL" "$BIN/sknockbench" spoof "${args[@]}" >/dev/null
}
# slow_reentry: the slow-reentry fault keeps knocks out for 4 s after
# each restart.
slow_reentry() {
  [ "$SOAK_FAULT" = slow-reentry ] || return 0
  knock_drop_rule -I
  (sleep 4; knock_drop_rule -D) &
}
fault_restart() { stop_daemon TERM; slow_reentry; start_daemon; }
fault_kill() { stop_daemon KILL; slow_reentry; start_daemon; }

# Faults that show an invariant can fail (scripts/soak-faults.sh).
knock_drop_rule() { # knock_drop_rule -I|-D [statistic...]
  local op=$1; shift
  for ipt in iptables ip6tables; do
    in_ns "$SRV" $ipt -t raw "$op" PREROUTING -p udp --dport 40000:40999 "$@" -j DROP 2>/dev/null || true
  done
}
soak_fault_start() {
  case "$SOAK_FAULT" in
    drop-knocks) knock_drop_rule -I -m statistic --mode random --probability 0.5 ;;
  esac
}
soak_fault_midway() { # once, a third into the leak phase
  case "$SOAK_FAULT" in
    grant-prober) try in_ns "$PRB" "$SK" knock --pkcs12 "$GEN/c1x0.g1.pfx" --server-cert "$SERVER_CERT" \
        --password-file "$PW" --no-verify -q --knock-port 40000 198.18.0.1 tcp/5000 ;;
    watchdog) kill -STOP "$DAEMON_PID"; sleep $((SOAK_WATCHDOG + 3)); kill -CONT "$DAEMON_PID" ;;
  esac
}

# run_phase NAME SECONDS RESTARTS: the fault schedule for one phase.
run_phase() {
  local name=$1 len=$2 restarts=$3
  local t0=$SECONDS
  local end=$((t0 + len))
  local next_hup=$((t0 + HUP_EVERY)) next_flush=$((t0 + FLUSH_EVERY / 2)) next_crl=$((t0 + CRL_EVERY / 3))
  local next_reissue=0 next_grants=$((t0 + GRANTS_EVERY / 2)) next_flood=$((t0 + FLOOD_EVERY / 4))
  local next_restart=$((t0 + RESTART_EVERY / 2)) next_kill=$((t0 + KILL_EVERY * 3 / 4)) midway=$((t0 + len / 3))
  event phase name="$name"
  log "phase $name: ${len}s (reload ${HUP_EVERY}s, flush ${FLUSH_EVERY}s, crl ${CRL_EVERY}s, grants ${GRANTS_EVERY}s, floods ${FLOOD_EVERY}s$([ "$restarts" = 1 ] && echo ", restart ${RESTART_EVERY}s, kill -9 ${KILL_EVERY}s"))"
  while [ $SECONDS -lt $end ]; do
    local now=$SECONDS
    if [ "$name" = leak ] && [ "$midway" -gt 0 ] && [ "$now" -ge "$midway" ]; then soak_fault_midway; midway=0; fi
    if [ "$restarts" = 1 ] && [ "$now" -ge "$next_kill" ]; then
      fault_kill; next_kill=$((now + KILL_EVERY)); next_restart=$((next_restart > now + 5 ? next_restart : now + 5))
    elif [ "$restarts" = 1 ] && [ "$now" -ge "$next_restart" ]; then
      fault_restart; next_restart=$((now + RESTART_EVERY))
    fi
    [ "$now" -ge "$next_hup" ] && { fault_reload; next_hup=$((now + HUP_EVERY)); }
    # A flush lands at least 2 s after a reload and 3 s before the next,
    # so that the watcher, not a reload's rule swap, puts the rules back.
    if [ "$now" -ge "$next_flush" ] && [ $((now - LAST_HUP)) -ge 2 ]; then
      fault_flush; next_flush=$((now + FLUSH_EVERY)); next_hup=$((next_hup > now + 3 ? next_hup : now + 3))
    fi
    if [ "$now" -ge "$next_crl" ]; then fault_crl; next_crl=$((now + CRL_EVERY)); next_reissue=$((now + CRL_EVERY / 2)); fi
    if [ "$next_reissue" -gt 0 ] && [ "$now" -ge "$next_reissue" ]; then fault_reissue; next_reissue=0; fi
    [ "$now" -ge "$next_grants" ] && { fault_grants_revoke; next_grants=$((now + GRANTS_EVERY)); }
    [ "$now" -ge "$next_flood" ] && { fault_flood; next_flood=$((now + FLOOD_EVERY / 3)); }
    sleep 0.5
  done
  fault_reissue
}

soak_fault_start
run_phase leak "$LEAK" 0
run_phase chaos "$CHAOS" 1
event end
log "stopping; judging"
# The clients stop first and report their held connections as ended by
# the run; the echo services stop only then, so that none looks cut.
for p in "${CLIENT_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
for p in "${CLIENT_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
for p in "${BG[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
for p in "${BG[@]}"; do wait "$p" 2>/dev/null || true; done
BG=()
stop_daemon TERM
protect_flag() { echo "$1=$(echo "$2" | tr -d ' ')"; }
set +e
"$SOAK" report -dir "$EV" -protect "$(protect_flag a "$PROTECT_A")" -protect "$(protect_flag b "$PROTECT_B")" \
  -open-duration 15 -watchdog "$SOAK_WATCHDOG" > "$W/report.md"
rc=$?
set -e
{
  echo "SOAK_SECONDS=$SOAK_SECONDS${SOAK_FAULT:+ SOAK_FAULT=$SOAK_FAULT} on $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, Linux $(uname -r); $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "knocks with protocols: ${PROTOCOLS:-v1 (the client offers no --protocol)}; restarts $(grep -c '"kind":"stop"' "$EV/script.events"), kill -9 $(grep -c '"kind":"kill"' "$EV/script.events"), reloads $(grep -c '"kind":"reload"' "$EV/script.events"), flushes $(grep -c '"kind":"flush"' "$EV/script.events"), revocations $(grep -c '"kind":"revoke"' "$EV/script.events"), floods $(grep -c '"kind":"flood"' "$EV/script.events")"
  echo
  cat "$W/report.md"
} > "$W/table.md"
[ -n "$OUT" ] && cp "$W/table.md" "$OUT"
cat "$W/table.md"
exit $rc
}
