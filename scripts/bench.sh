#!/usr/bin/env bash
# Whole-system performance measurements of sknock, as root, in network
# namespaces this script makes and deletes (also on failure). One run
# measures every row of the table below, prints it as Markdown and writes
# it to a dated report, docs/bench/DATE.md (OUT=FILE: elsewhere). Ratios
# are of figures from the same run. docs/performance.md is written by
# hand: copy the figures worth keeping there, with a link to the report.
#
#   sudo scripts/bench.sh                       about 5-8 minutes on 2 cores
#   sudo FLOOD_N=500000 scripts/bench.sh        smaller floods
#   sudo PHASES="micro e2e" scripts/bench.sh    only some phases (the table
#                                               then shows n/a for the rest)
#
# Traffic goes only between the namespaces, to 198.18.0.0/15 addresses;
# every flood is bounded in packets and in time. The host's own iptables
# are never touched: every rule lives in the server namespace.
set -euo pipefail
shopt -s lastpipe
cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH="$PATH:/usr/local/go/bin"

PHASES=${PHASES:-"micro e2e gate metrics garbage spoof v2 fwknop memory"}
LAT_N=${LAT_N:-200}            # knocks per latency series
THRU_N=${THRU_N:-12000}        # valid knocks for the throughput row
FLOOD_N=${FLOOD_N:-500000}    # SYNs per gate flood
GARBAGE_RATE=${GARBAGE_RATE:-20000}
GARBAGE_FOR=${GARBAGE_FOR:-10s}
SPOOF_RATE=${SPOOF_RATE:-30000}  # spoofed-source floods of rows 8a and 8b
FRESH_N=${FRESH_N:-50}           # fresh clients per spoofed flood (at most 250)
V2_MULTS=${V2_MULTS:-"1 2 4"}     # v2 rows 9c/9d: flood rates as multiples of the ECDH rate
CEIL_RATE=${CEIL_RATE:-400000}   # row 9e: offered wrong-mac1 rate (the sender's own limit caps it)
# The dated report; a second run on the same day gets the time too, so
# that no report is overwritten.
OUT=${OUT:-docs/bench/$(date -u +%Y-%m-%d).md}
[ -e "$OUT" ] && [ -z "${OVERWRITE:-}" ] && OUT=${OUT%.md}-$(date -u +%H%M%S).md

[ "$(id -u)" -eq 0 ] || { echo "bench.sh: run as root (sudo scripts/bench.sh)" >&2; exit 1; }
command -v go >/dev/null || { echo "bench.sh: Go is not installed (need Go 1.26)" >&2; exit 1; }

# ---- tools -----------------------------------------------------------------
need=()
command -v iptables >/dev/null || need+=(iptables)
command -v trafgen  >/dev/null || need+=(netsniff-ng)
command -v fwknopd  >/dev/null || need+=(fwknop-server)
command -v fwknop   >/dev/null || need+=(fwknop-client)
command -v hping3   >/dev/null || need+=(hping3)
command -v tcpdump  >/dev/null || need+=(tcpdump)
if [ "${#need[@]}" -gt 0 ]; then
  echo "==> installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fwknop-server fwknop-client hping3 netsniff-ng iptables tcpdump >/dev/null
fi
for m in nfnetlink_queue xt_NFQUEUE nf_conntrack xt_conntrack xt_mark xt_length xt_hashlimit ipt_REJECT veth; do
  modprobe -q "$m" 2>/dev/null || true
done

W=$(mktemp -d /tmp/sknock-bench.XXXXXX)
BIN=$W/bin
SRV=sknb-srv-$$ CLI=sknb-cli-$$ MAL=sknb-mal-$$
SRV_IP=198.18.0.1 CLI_IP=198.18.0.2 MAL_IP=198.18.2.2
BG=()   # background processes this script started

cleanup() {
  set +e
  for p in "${BG[@]}"; do kill "$p" 2>/dev/null; done
  for ns in "$SRV" "$CLI" "$MAL"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  [ -n "${KEEP:-}" ] && echo "bench.sh: work files kept in $W" || rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "==> $*" >&2; }
in_srv() { ip netns exec "$SRV" "$@"; }
in_cli() { ip netns exec "$CLI" "$@"; }
in_mal() { ip netns exec "$MAL" "$@"; }
has_phase() { [[ " $PHASES " == *" $1 "* ]]; }

# R holds every figure by name; kvs reads key=value lines into it.
declare -A R
kvs() { local k v; while IFS='=' read -r k v; do [ -n "$k" ] && R[$k]=$v; done; }
get() { echo "${R[$1]:-n/a}"; }
calc() { awk "BEGIN { printf \"$1\", $2 }" 2>/dev/null || echo n/a; }
# ratio A B FORMAT: A/B, or n/a when either is missing.
ratio() {
  local a=${R[$1]:-} b=${R[$2]:-}
  if [[ "$a" =~ ^[0-9.]+$ && "$b" =~ ^[0-9.]+$ ]] && awk "BEGIN{exit !($b>0)}"; then
    calc "${3:-%.2f}" "$a/$b"
  else echo n/a; fi
}

# ---- build -----------------------------------------------------------------
log "building into $BIN"
CGO_ENABLED=0 go build -o "$BIN/" ./cmd/sknockd ./cmd/sknock ./internal/bench/sknockbench ./internal/bench/nfqaccept ./internal/bench/empty
SB=$BIN/sknockbench

# ---- PKI ---------------------------------------------------------------------
PKI=$W/pki PW=$W/pki/pass
mkdir -p "$PKI"; echo bench-password > "$PW"
"$BIN/sknock" pki init --dir "$PKI" >/dev/null
"$BIN/sknock" pki server --dir "$PKI" --name gatekeeper --password-file "$PW" >/dev/null
# Authorisations list single ports: the latency series rotate over
# tcp/2000-2039; 2240 is the granted client's port under the garbage
# flood, 2260 and 2261 the gate flood targets.
ALLOW=$( (seq -f 'tcp/%g' 2000 2039; echo tcp/2240; echo tcp/2260; echo tcp/2261) | paste -sd, )
CLIENTS=()
for i in 0 1 2 3 4 5 6 7; do
  "$BIN/sknock" pki client --dir "$PKI" --name "c$i" --allow "$ALLOW" --password-file "$PW" >/dev/null
  CLIENTS+=("$PKI/c$i.pfx")
done
"$BIN/sknock" pki crl --dir "$PKI" >/dev/null
PFX_LIST=$(IFS=,; echo "${CLIENTS[*]}")
SERVER_CERT=$PKI/gatekeeper.pem

# ---- namespaces ----------------------------------------------------------------
# cli (198.18.0.2, and 198.18.1.1-64 as extra knock sources) and mal
# (198.18.2.2) each have a veth to srv (198.18.0.1 on vc, 198.18.2.1 on vm).
log "namespaces $SRV $CLI $MAL"
for ns in "$SRV" "$CLI" "$MAL"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add vc netns "$SRV" type veth peer name veth0 netns "$CLI"
ip link add vm netns "$SRV" type veth peer name veth0 netns "$MAL"
ip -n "$SRV" addr add $SRV_IP/24 dev vc
ip -n "$SRV" addr add 198.18.2.1/24 dev vm
ip -n "$CLI" addr add $CLI_IP/24 dev veth0
ip -n "$MAL" addr add $MAL_IP/24 dev veth0
for i in $(seq 1 64); do ip -n "$CLI" addr add 198.18.1.$i/32 dev veth0; done
for l in "$SRV vc" "$SRV vm" "$CLI veth0" "$MAL veth0"; do set -- $l; ip -n "$1" link set "$2" up; done
ip -n "$SRV" route add 198.18.1.0/24 via $CLI_IP
ip -n "$CLI" route add default via $SRV_IP
ip -n "$MAL" route add default via 198.18.2.1
SRV_MAC=$(ip -n "$SRV" -br link show vc | awk '{print $3}')
CLI_MAC=$(ip -n "$CLI" -br link show veth0 | awk '{print $3}')

# Ports: 2000-2249 and 2300 have listeners; 2000-2299 are protected;
# 2260 and 2261 are the gate flood targets (no listener: the kernel
# answers an accepted SYN with a RST); 2300 is open to everyone.
start_bg() { "$@" & BG+=($!); }
start_bg in_srv "$SB" listen -ports 2000-2249 -for 20m >/dev/null
start_bg in_srv "$SB" listen -ports 2300 -for 20m >/dev/null

# ---- sknockd -----------------------------------------------------------------
# write_config FILE OPEN_DURATION [CRL] [RATE_LIMIT] [CRL_REFRESH]
write_config() {
  cat > "$1" <<EOF
server:
  pkcs12: $PKI/gatekeeper.pfx
  password_file: $PW
crl:
  file: ${3:-$PKI/ca.crl}
  refresh: ${5:-30m}
knock:
  ports: "40000:40100"
  timestamp_tolerance: 60s
  rate_limit: ${4:-""}
  replay_file: $W/replay
gate:
  protect: [tcp/2000-2299]
  always_allow: [tcp/22]
  open_duration: $2
  policy: drop
log:
  level: info
control:
  socket: $W/control.sock
EOF
}
DAEMON_PID= DAEMON_LOG=
# start_daemon CONFIG LOG: runs sknockd in srv and waits until it serves.
start_daemon() {
  DAEMON_LOG=$2
  ip netns exec "$SRV" "$BIN/sknockd" --config "$1" 2>>"$DAEMON_LOG" &
  DAEMON_PID=$!; BG+=($DAEMON_PID)
  for _ in $(seq 100); do
    grep -q '"sknockd started"' "$DAEMON_LOG" 2>/dev/null && return 0
    kill -0 "$DAEMON_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "bench.sh: sknockd did not start:" >&2; cat "$DAEMON_LOG" >&2; exit 1
}
stop_daemon() {
  [ -n "$DAEMON_PID" ] || return 0
  kill -TERM "$DAEMON_PID" 2>/dev/null || true
  wait "$DAEMON_PID" 2>/dev/null || true
  DAEMON_PID=
}
lines() { wc -l < "$1"; }
# knock_cmd PFX [FLAG...]: the client command of the latency series.
knock_cmd() { local pfx=$1; shift; echo "$BIN/sknock knock --pkcs12 $pfx --server-cert $SERVER_CERT --password-file $PW --knock-port 40000 --no-verify -q $* $SRV_IP tcp/{port}"; }
# The cached series keep the unlocked bundle in root's user keyring; the
# entry expires by itself two minutes after the last store.
KEY_CACHE="--key-cache 2m"

# ---- 1. deciding a knock vs the crypto floor -----------------------------------
if has_phase micro; then
  log "micro: go test -bench (gate)"
  go test -run='^$' -bench 'BenchmarkDecideKnownClient|BenchmarkCryptoFloor|BenchmarkDecideV2KnownClient|BenchmarkRefuseBadMAC1' -benchtime=2s -count=3 ./gate/ > "$W/micro.txt"
  med() { awk -v b="$1" '$1 ~ "^"b"(-[0-9]+)?$" {print $3}' "$W/micro.txt" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
  R[decide_ns]=$(med BenchmarkDecideKnownClient)
  R[floor_ns]=$(med BenchmarkCryptoFloor)
  R[decide2_ns]=$(med BenchmarkDecideV2KnownClient)
  R[badmac_ns]=$(med BenchmarkRefuseBadMAC1)
  R[badmac_us]=$(calc %.2f "${R[badmac_ns]:-0}/1000")
  R[floor_x_cores]=$(calc %.0f "1e9/${R[floor_ns]}*$(nproc)")
fi

# ---- 2 and 4. end-to-end latency and knock throughput ---------------------------
if has_phase e2e; then
  write_config "$W/d1.yaml" 1s
  start_daemon "$W/d1.yaml" "$W/d1.log"
  log "latency: connect to an open port ($LAT_N)"
  in_cli "$SB" latency -mode open -dst $SRV_IP -ports 2300 -n "$LAT_N" -prefix open | kvs
  log "latency: sknock knock + prober ($LAT_N)"
  from=$(lines "$W/d1.log")
  in_cli "$SB" latency -mode exec -cmd "$(knock_cmd "${CLIENTS[0]}")" -dst $SRV_IP -ports 2000-2039 -n "$LAT_N" -prefix sk | kvs
  "$SB" logstats -log "$W/d1.log" -from "$from" -prefix skl | kvs
  log "latency: sknock knock $KEY_CACHE + prober ($LAT_N; one knock first fills the cache)"
  in_cli $(knock_cmd "${CLIENTS[2]}" $KEY_CACHE | sed 's/{port}/2039/') || true
  in_cli "$SB" latency -mode exec -cmd "$(knock_cmd "${CLIENTS[2]}" $KEY_CACHE)" -dst $SRV_IP -ports 2000-2039 -n "$LAT_N" -prefix skc | kvs
  log "client process alone: sknock knock start → exit ($LAT_N, then $LAT_N with the key cache)"
  # A port the certificates allow: the client refuses others locally,
  # sending nothing (issue 13), which would measure no knock at all.
  in_cli "$SB" latency -mode run -cmd "$(knock_cmd "${CLIENTS[0]}")" -dst $SRV_IP -ports 2039 -n "$LAT_N" -prefix run | kvs
  in_cli "$SB" latency -mode run -cmd "$(knock_cmd "${CLIENTS[2]}" $KEY_CACHE)" -dst $SRV_IP -ports 2039 -n "$LAT_N" -prefix runc | kvs
  in_cli "$SB" latency -mode run -cmd "$BIN/sknock --version" -dst $SRV_IP -ports 2300 -n "$LAT_N" -prefix runv | kvs
  in_cli "$SB" latency -mode run -cmd "$BIN/empty" -dst $SRV_IP -ports 2300 -n "$LAT_N" -prefix rune | kvs
  in_cli "$SB" latency -mode run -cmd "$(command -v true)" -dst $SRV_IP -ports 2300 -n "$LAT_N" -prefix runt | kvs
  log "latency: sealed datagram + prober, no client process ($LAT_N)"
  in_cli "$SB" latency -mode datagram -pfx "${CLIENTS[1]}" -password-file "$PW" -server-cert "$SERVER_CERT" \
    -sources 198.18.1.1+64 -dst $SRV_IP -ports 2000-2039 -n "$LAT_N" -prefix dg | kvs
  log "throughput: $THRU_N valid knocks from 64 sources, 8 certificates"
  rate=$(calc %.0f "${R[floor_x_cores]:-8000}*1.3")
  from=$(lines "$W/d1.log")
  in_cli "$SB" seal-send -pfx "$PFX_LIST" -password-file "$PW" -server-cert "$SERVER_CERT" -dst $SRV_IP \
    -sources 198.18.1.1+64 -n "$THRU_N" -rate "$rate" -for 20s | kvs
  sleep 2
  stop_daemon
  "$SB" logstats -log "$W/d1.log" -from "$from" -prefix thr | kvs
fi

# ---- 3. gate verdicts under a SYN flood -------------------------------------------
# flood LABEL QUEUE DPORT: a bounded trafgen SYN flood from cli to srv,
# random source ports, while qrate samples the queue's kernel counters.
flood() {
  local label=$1 queue=$2 dport=$3
  cat > "$W/syn.cfg" <<EOF
{
  eth(da=$SRV_MAC, sa=$CLI_MAC),
  ipv4(sa=$CLI_IP, da=$SRV_IP, ttl=64, df),
  tcp(sp=drnd(1024, 65535), dp=$dport, seq=drnd(), syn, win=64240)
}
EOF
  rm -f "$W/ready"
  in_srv "$SB" qrate -queue "$queue" -iface vc -prefix "$label" -ready "$W/ready" -for 60s > "$W/$label.kv" &
  local q=$!
  for _ in $(seq 50); do [ -e "$W/ready" ] && break; sleep 0.05; done
  timeout 60 ip netns exec "$CLI" trafgen --dev veth0 --cpus 1 -n "$FLOOD_N" --conf "$W/syn.cfg" -q >/dev/null 2>"$W/trafgen.err" || true
  wait "$q" || true
  kvs < "$W/$label.kv"
}
if has_phase gate; then
  write_config "$W/d2.yaml" 120s
  log "gate flood: sknockd, no grant ($FLOOD_N SYNs)"
  start_daemon "$W/d2.yaml" "$W/d2.log"
  flood gnogrant 101 2260
  log "gate flood: sknockd, granted source"
  in_cli "$BIN/sknock" knock --pkcs12 "${CLIENTS[0]}" --server-cert "$SERVER_CERT" --password-file "$PW" \
    --knock-port 40000 --no-verify -q $SRV_IP tcp/2261
  sleep 0.2
  flood ggrant 101 2261
  # The held-packet attack: well-formed garbage knocks (each costs the
  # gatekeeper an ECDH, so its workers keep a backlog) from another
  # address, where nothing is deferred; then the same knock load from the
  # flooding address itself, so that every SYN meets a pending knock and
  # asks to be deferred to the hold queue.
  for who in other same; do
    log "gate flood, no grant, under a backlog of knocks from the $who source"
    # Both from cli's namespace and link, as the flood; only the source
    # address differs (198.18.1.1 is one of cli's extra addresses).
    srcs=; [ $who = other ] && srcs="-sources 198.18.1.1+1"
    in_cli "$SB" garbage -dst $SRV_IP -rate 30000 -n 3000000 -for 60s $srcs > "$W/holdgarbage$who.kv" & gp=$!
    sleep 1
    flood ghold$who 101 2260
    kill "$gp" 2>/dev/null || true; wait "$gp" 2>/dev/null || true
  done
  stop_daemon
  grep -o '"gate_held":[0-9]*' "$W/d2.log" | tail -1 | sed 's/"gate_held":/ghold_deferred=/' | kvs || true
  # The same rules without sknockd: the minimal consumer, then the kernel.
  in_srv "$BIN/sknockd" --config "$W/d2.yaml" --rules-script apply | in_srv sh
  for mode in accept drop; do
    log "gate flood: minimal go-nfqueue consumer ($mode every packet)"
    flag=; [ $mode = drop ] && flag=-drop
    ip netns exec "$SRV" "$BIN/nfqaccept" -queue 101 $flag -for 120s 2>"$W/nfq$mode.err" & np=$!; BG+=($np)
    sleep 0.3
    flood "nfq$mode" 101 2260
    kill "$np" 2>/dev/null || true; wait "$np" 2>/dev/null || true
  done
  in_srv "$BIN/sknockd" --config "$W/d2.yaml" --rules-script remove | in_srv sh
  log "gate flood: kernel alone (DROP rule)"
  in_srv iptables -I INPUT 1 -p tcp --dport 2260 --syn -j DROP
  flood kdrop -1 2260
  R[kdrop_count]=$(in_srv iptables -nvxL INPUT 1 | awk '{print $1}')
  R[kdrop_rate]=$(calc %.0f "${R[kdrop_count]}/${R[kdrop_rx_window_s]}")
  in_srv iptables -D INPUT 1
fi

# ---- 3e. the gate with metrics on vs off ------------------------------------------
if has_phase metrics; then
  # 3a's flood against a fresh sknockd without metrics, then against one
  # with metrics on and scraped every second (bash's /dev/tcp: no HTTP
  # client needed), twice in turn so that drift of the machine's load
  # falls on both alike.
  write_config "$W/d2.yaml" 120s
  write_config "$W/d2m.yaml" 120s
  printf 'metrics:\n  listen: 127.0.0.1:9466\n' >> "$W/d2m.yaml"
  scrape='exec 3<>/dev/tcp/127.0.0.1/9466 && printf "GET /metrics HTTP/1.0\r\n\r\n" >&3 && cat <&3'
  for i in 1 2; do
    log "gate flood $i: fresh sknockd, metrics off, no grant"
    start_daemon "$W/d2.yaml" "$W/d2off$i.log"
    flood gmetoff$i 101 2260
    stop_daemon
    log "gate flood $i: sknockd with metrics scraped every second, no grant"
    start_daemon "$W/d2m.yaml" "$W/d2m$i.log"
    ip netns exec "$SRV" bash -c "for _ in \$(seq 120); do ($scrape) >/dev/null 2>&1; sleep 1; done" &
    scraper=$!; BG+=($scraper)
    flood gmetrics$i 101 2260
    kill "$scraper" 2>/dev/null || true
    R[gmetrics_scraped_drops]=$(in_srv bash -c "$scrape" 2>/dev/null | awk '$1 == "sknock_gate_verdicts_total{verdict=\"drop\"}" {printf "%.0f", $2}')
    stop_daemon
  done
  R[gmetoff_rate]=$(calc %.0f "(${R[gmetoff1_rate]:-0}+${R[gmetoff2_rate]:-0})/2")
  R[gmetrics_rate]=$(calc %.0f "(${R[gmetrics1_rate]:-0}+${R[gmetrics2_rate]:-0})/2")
fi

# ---- 6. legitimate knocks under a garbage flood -------------------------------------
# run_garbage SUFFIX CONFIG: the granted client's connect latency without
# and with the flood, and LAT_N legitimate knocks during it.
run_garbage() {
  local x=$1
  start_daemon "$2" "$W/d3$x.log"
  in_cli "$BIN/sknock" knock --pkcs12 "${CLIENTS[2]}" --server-cert "$SERVER_CERT" --password-file "$PW" \
    --knock-port 40000 --no-verify -q $SRV_IP tcp/2240
  sleep 0.2
  log "granted client's connect latency, no flood"
  in_cli "$SB" connect -addr $SRV_IP:2240 -n 400 -gap 5ms -for 5s -prefix calm$x | kvs
  log "garbage flood: $GARBAGE_RATE/s for $GARBAGE_FOR from $MAL_IP, with $LAT_N legitimate knocks ($2)"
  in_mal "$SB" garbage -dst $SRV_IP -rate "$GARBAGE_RATE" -n 1000000 -for "$GARBAGE_FOR" > "$W/garbage$x.kv" & gp=$!
  sleep 1
  in_cli "$SB" connect -addr $SRV_IP:2240 -n 1000 -gap 5ms -for 6s -prefix flood$x > "$W/connflood$x.kv" & cp=$!
  in_cli "$SB" latency -mode datagram -pfx "${CLIENTS[3]}" -password-file "$PW" -server-cert "$SERVER_CERT" \
    -sources 198.18.1.1+64 -dst $SRV_IP -ports 2000-2039 -n "$LAT_N" -timeout 1s -gap 5ms -prefix legit$x | kvs
  wait "$cp" || true; wait "$gp" || true
  kvs < "$W/connflood$x.kv"; sed "s/^garbage_/garbage${x}_/" "$W/garbage$x.kv" | kvs
  stop_daemon
  "$SB" logstats -log "$W/d3$x.log" -prefix gl$x | kvs
}
if has_phase garbage; then
  # With the shipped default knock.rate_limit (iptables hashlimit per
  # source, before any crypto), then with the limit off.
  write_config "$W/d3.yaml" 120s "" '"20/second"'
  run_garbage "" "$W/d3.yaml"
  write_config "$W/d3rl.yaml" 120s "" '""'
  run_garbage rl "$W/d3rl.yaml"
fi

# ---- 8. fresh clients under spoofed-source floods ---------------------------------
# run_spoof LABEL KIND RATE [returning]: sknockbench spoof floods the knock ports from
# mal with KIND datagrams (random bytes; one sealed knock naming mal's
# address, replayed; or distinct knock-shaped datagrams with fresh
# ephemeral keys) from random sources of 198.18.64.0/18, 198.18.128.0/17
# and 198.19.0.0/16, while FRESH_N fresh clients (cli's 198.18.3.1-N, each
# knocking once from its own address, sealed just before sending) knock;
# success = the prober connects within 1 s. With "returning", the same
# clients first knock once each without the flood (their grants end after
# the 1 s open_duration; they are then recently granted sources).
run_spoof() {
  local x=$1 kind=$2 rate=$3 proto=${5:-1}
  start_daemon "$W/d8.yaml" "$W/d8$x.log"
  if [ "${4:-}" = returning ]; then
    in_cli "$SB" latency -mode datagram -pfx "${CLIENTS[4]}" -password-file "$PW" -server-cert "$SERVER_CERT" \
      -sources 198.18.3.1+"$FRESH_N" -dst $SRV_IP -ports 2000-2039 -n "$FRESH_N" -timeout 1s -gap 20ms -prefix pre$x | kvs
  fi
  log "spoofed flood $x: $kind at $rate/s, $FRESH_N fresh clients"
  # Started without a shell function, so that $! is the sender itself
  # (ip netns exec execs it), which reports what it sent on SIGTERM.
  ip netns exec "$MAL" "$SB" spoof -kind "$kind" -dst $SRV_IP -rate "$rate" -n $((rate * 120)) -for 120s -distinct 60000 \
    -pfx "${CLIENTS[5]}" -password-file "$PW" -server-cert "$SERVER_CERT" -names $MAL_IP -prefix sp$x > "$W/sp$x.kv" & sp=$!; BG+=($sp)
  # Let the flood reach its rate (fresh keys are made first).
  for _ in $(seq 300); do grep -q prepare "$W/sp$x.kv" 2>/dev/null && break; sleep 0.1; done
  sleep 3
  in_cli "$SB" latency -mode datagram -protocol "$proto" -pfx "${CLIENTS[4]}" -password-file "$PW" -server-cert "$SERVER_CERT" \
    -sources 198.18.3.1+"$FRESH_N" -dst $SRV_IP -ports 2000-2039 -n "$FRESH_N" -timeout 1s -gap 20ms -prefix fr$x | kvs
  kill -TERM "$sp" 2>/dev/null || true; wait "$sp" || true
  kvs < "$W/sp$x.kv"
  stop_daemon
  "$SB" logstats -log "$W/d8$x.log" -prefix sl$x | kvs
  local ok=${R[fr${x}_n]:-0} fail=${R[fr${x}_fail]:-0}
  R[fr${x}_pct]=$(calc %.1f "100*$ok/($ok+$fail)")
}
# spoof_setup: the ECDH rate, the config and the fresh clients' addresses
# of rows 8 and 9, once.
SPOOF_READY=
spoof_setup() {
  [ -n "$SPOOF_READY" ] && return 0
  go test -run='^$' -bench 'BenchmarkECDH$' -benchtime=2s -count=3 ./gate/ > "$W/ecdh.txt"
  R[ecdh_ns]=$(awk '$1 ~ /^BenchmarkECDH(-[0-9]+)?$/ {print $3}' "$W/ecdh.txt" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  R[ecdh_rate]=$(calc %.0f "1e9/${R[ecdh_ns]}*$(nproc)")
  write_config "$W/d8.yaml" 1s "" '"20/second"'
  in_srv sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.vm.rp_filter=0
  for i in $(seq 1 "$FRESH_N"); do ip -n "$CLI" addr add 198.18.3.$i/32 dev veth0; done
  ip -n "$SRV" route add 198.18.3.0/24 via $CLI_IP
  SPOOF_READY=1
}
if has_phase spoof; then
  spoof_setup
  run_spoof rand random "$SPOOF_RATE"
  run_spoof repl replay "$SPOOF_RATE"
  run_spoof mut mutate "$SPOOF_RATE"
  for f in 10 25 50 100; do
    run_spoof fresh$f fresh "$(calc %.0f "${R[ecdh_rate]}*$f/100")"
    R[spfresh${f}_x]=$(calc %.2f "${R[spfresh${f}_rate]:-0}/${R[ecdh_rate]}")
  done
  run_spoof back fresh "${R[ecdh_rate]}" returning
  R[spback_x]=$(calc %.2f "${R[spback_rate]:-0}/${R[ecdh_rate]}")
fi

# ---- 9. knock v2: fresh v2 clients under spoofed floods, the knock queue's ceiling ----
if has_phase v2; then
  spoof_setup
  # 9c: v1-shaped datagrams with fresh ephemeral keys (an ECDH each, to
  # anyone); 9d: v2-shaped datagrams with a wrong mac1 (one HMAC each).
  # The fresh clients knock in v2 (one datagram each, no retry).
  for m in $V2_MULTS; do
    run_spoof v2a$m fresh "$(calc %.0f "${R[ecdh_rate]}*$m")" "" 2
    R[spv2a${m}_x]=$(calc %.2f "${R[spv2a${m}_rate]:-0}/${R[ecdh_rate]}")
    run_spoof v2b$m v2badmac "$(calc %.0f "${R[ecdh_rate]}*$m")" "" 2
    R[spv2b${m}_x]=$(calc %.2f "${R[spv2b${m}_rate]:-0}/${R[ecdh_rate]}")
  done
  # 9e: the knock queue's own ceiling: wrong-mac1 datagrams as fast as the
  # sender goes, 10 s, while qrate samples the knock queue's kernel
  # counters (handled/s, and what the kernel dropped because sknockd's
  # receive goroutine fell behind).
  log "knock queue ceiling: wrong-mac1 flood at up to $CEIL_RATE/s for 10 s"
  start_daemon "$W/d8.yaml" "$W/d9ceil.log"
  rm -f "$W/ready"
  in_srv "$SB" qrate -queue 100 -iface vm -prefix kqceil -ready "$W/ready" -for 14s > "$W/kqceil.kv" & q=$!
  for _ in $(seq 50); do [ -e "$W/ready" ] && break; sleep 0.05; done
  ip netns exec "$MAL" "$SB" spoof -kind v2badmac -dst $SRV_IP -rate "$CEIL_RATE" -n $((CEIL_RATE * 10)) -for 10s \
    -prefix spceil > "$W/spceil.kv" || true
  wait "$q" || true
  kvs < "$W/kqceil.kv"; kvs < "$W/spceil.kv"
  stop_daemon
  "$SB" logstats -log "$W/d9ceil.log" -prefix slceil | kvs
fi

# ---- 5. fwknop, same namespaces and prober --------------------------------------------
if has_phase fwknop; then
  F=$W/fwknop; mkdir -p "$F/run"
  keys=$(fwknop --key-gen --no-rc-file)
  KEY=$(echo "$keys" | awk '/^KEY_BASE64/ {print $2}')
  HMAC=$(echo "$keys" | awk '/^HMAC_KEY_BASE64/ {print $2}')
  cat > "$F/access.conf" <<EOF
SOURCE              ANY
KEY_BASE64          $KEY
HMAC_KEY_BASE64     $HMAC
FW_ACCESS_TIMEOUT   2
EOF
  chmod 600 "$F/access.conf"
  # sknock's gate (mangle PREROUTING, kept by every stop) must not stand
  # in front of fwknop: unhook it (and the backstop) in this namespace.
  for ipt in iptables ip6tables; do
    in_srv $ipt -t mangle -F PREROUTING
    in_srv $ipt -t mangle -F POSTROUTING
  done
  # The protected ports are closed by a plain rule; fwknopd puts its
  # FWKNOP_INPUT jump in front of it.
  in_srv iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
  in_srv iptables -A INPUT -p tcp --dport 2000:2299 -j DROP
  for mode in pcap udp; do
    udp=N; [ $mode = udp ] && udp=Y
    cat > "$F/fwknopd.conf" <<EOF
PCAP_INTF                 vc;
PCAP_FILTER               udp port 62201;
ENABLE_UDP_SERVER         $udp;
UDPSERV_PORT              62201;
FWKNOP_RUN_DIR            $F/run;
ENABLE_DIGEST_PERSISTENCE N;
FLUSH_IPT_AT_INIT         Y;
FLUSH_IPT_AT_EXIT         Y;
EOF
    chmod 600 "$F/fwknopd.conf"
    log "latency: fwknop $mode mode + prober ($LAT_N)"
    ip netns exec "$SRV" fwknopd -f -c "$F/fwknopd.conf" -a "$F/access.conf" -p "$F/run/fwknopd.pid" -i vc \
      --digest-file "$F/run/digest.cache" >"$F/fwknopd-$mode.log" 2>&1 & fp=$!; BG+=($fp)
    sleep 1.5
    in_cli "$SB" latency -mode exec -dst $SRV_IP -ports 2000-2039 -n "$LAT_N" -timeout 3s -prefix fw$mode \
      -cmd "fwknop --no-rc-file --no-save-args -A tcp/{port} -a $CLI_IP -D $SRV_IP -p 62201 --use-hmac --key-base64-rijndael $KEY --key-base64-hmac $HMAC" | kvs
    kill "$fp" 2>/dev/null || true; wait "$fp" 2>/dev/null || true
  done
  in_srv iptables -F INPUT
fi

# ---- 7. memory: 1M grants, 1M-serial CRL ------------------------------------------------
if has_phase memory; then
  log "memory: 1,000,000 grants in a gate.GrantTable"
  "$SB" grants -n 1000000 | kvs
  log "memory: a 1,000,000-serial CRL"
  "$SB" crl -dir "$PKI" -n 1000000 -out "$W/big.crl" | kvs
  write_config "$W/small.yaml" 15s
  write_config "$W/big.yaml" 15s "$W/big.crl"
  "$SB" rusage -prefix chksmall -- "$BIN/sknockd" --config "$W/small.yaml" --check 2>/dev/null | kvs
  "$SB" rusage -prefix chkbig -- "$BIN/sknockd" --config "$W/big.yaml" --check 2>/dev/null | kvs
  R[crl_load_s]=$(calc %.2f "${R[chkbig_wall_s]}-${R[chksmall_wall_s]}")
  # The running daemon 2 s after its start, then 2 s after a CRL refresh
  # put a second 1,000,000-serial CRL in force (crl.refresh re-reads the
  # file every second; the refresh builds the next trust state while the
  # first is in force).
  "$SB" crl -dir "$PKI" -n 1000000 -out "$W/big2.crl" | kvs
  cp "$W/big.crl" "$W/live.crl"
  write_config "$W/live.yaml" 15s "$W/live.crl" "" 1s
  start_daemon "$W/live.yaml" "$W/dbig.log"
  sleep 2
  R[crl_daemon_rss_mb]=$(awk '/VmRSS/ {printf "%.0f", $2/1024}' /proc/$DAEMON_PID/status)
  cp "$W/big2.crl" "$W/live.crl.new" && mv "$W/live.crl.new" "$W/live.crl"
  for _ in $(seq 300); do
    grep -q '"trust reloaded (CRL refresh)"' "$W/dbig.log" && break
    sleep 0.1
  done
  sleep 2
  grep -q '"trust reloaded (CRL refresh)"' "$W/dbig.log" &&
    R[crl_refresh_rss_mb]=$(awk '/VmRSS/ {printf "%.0f", $2/1024}' /proc/$DAEMON_PID/status)
  stop_daemon
  R[crl_rss_vs_check]=$(ratio crl_daemon_rss_mb chkbig_maxrss_mb)
  R[crl_refresh_vs_check]=$(ratio crl_refresh_rss_mb chkbig_maxrss_mb)
  R[crl_worst_vs_check]=$(awk -v a="${R[crl_rss_vs_check]}" -v b="${R[crl_refresh_vs_check]}" \
    'BEGIN { if (a+0 == 0 || b+0 == 0) print "n/a"; else print (a > b ? a : b) }')
  start_daemon "$W/small.yaml" "$W/dsmall.log"
  sleep 2
  R[idle_daemon_rss_mb]=$(awk '/VmRSS/ {printf "%.0f", $2/1024}' /proc/$DAEMON_PID/status)
  stop_daemon
fi

# ---- the table --------------------------------------------------------------------------
verdict() { # verdict VALUE OP GOAL
  [[ "$1" =~ ^[0-9.]+$ ]] || { echo "n/a"; return; }
  awk "BEGIN { exit !($1 $2 $3) }" && echo met || echo "**missed**"
}
R[decide_ratio]=$(ratio decide_ns floor_ns)
R[decide2_ratio]=$(ratio decide2_ns floor_ns)
v2rows() { # v2rows a|b: the 9c or 9d cell, one entry per multiple
  local m out=
  for m in $V2_MULTS; do out+="$(get spv2$1${m}_x)× ($(get spv2$1${m}_rate)/s): $(get frv2$1${m}_pct) %; "; done
  echo "${out%; }"
}
v2min() { # v2min a|b: the lowest success rate of the row
  local m v lo=
  for m in $V2_MULTS; do v=${R[frv2$1${m}_pct]:-}; [[ "$v" =~ ^[0-9.]+$ ]] || { echo n/a; return; }
    [ -z "$lo" ] || awk "BEGIN{exit !($v<$lo)}" && lo=$v; done
  echo "${lo:-n/a}"
}
R[thr_vs_floor]=$(ratio thr_grant_rate floor_x_cores)
R[g_nogrant_vs_nfqacc]=$(ratio gnogrant_rate nfqaccept_rate)
R[g_grant_vs_nfqacc]=$(ratio ggrant_rate nfqaccept_rate)
R[g_hold_vs_other]=$(ratio gholdsame_rate gholdother_rate)
R[g_hold_vs_nogrant]=$(ratio gholdsame_rate gnogrant_rate)
R[g_nogrant_vs_nfqdrop]=$(ratio gnogrant_rate nfqdrop_rate)
R[g_metrics_vs_off]=$(ratio gmetrics_rate gmetoff_rate)
R[nfq_vs_kernel]=$(ratio nfqaccept_rate kdrop_rate)
R[fwpcap_speedup]=$(ratio fwpcap_p50_ms sk_p50_ms %.1f)
R[fwudp_speedup]=$(ratio fwudp_p50_ms sk_p50_ms %.1f)
R[fwpcap_speedup_c]=$(ratio fwpcap_p50_ms skc_p50_ms %.1f)
R[fwudp_speedup_c]=$(ratio fwudp_p50_ms skc_p50_ms %.1f)
minof() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a+0==0||b+0==0) print "n/a"; else print (a<b?a:b) }'; }
min_speedup=$(minof "${R[fwpcap_speedup]}" "${R[fwudp_speedup]}")
min_speedup_c=$(minof "${R[fwpcap_speedup_c]}" "${R[fwudp_speedup_c]}")
success() { # success SUFFIX: percent of legitimate knocks that opened
  local ok=${R[legit$1_n]:-0}
  [ -n "${R[legit$1_fail]:-}" ] && calc %.1f "100*$ok/($ok+${R[legit$1_fail]})" || echo n/a
}
legit_ok=${R[legit_n]:-0} legit_rate=$(success "")
legitrl_ok=${R[legitrl_n]:-0} legitrl_rate=$(success rl)
decide_share_ms=$(calc %.3f "${R[skl_decide_p50_ms]:-0}")

CPU=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
mkdir -p "$(dirname "$OUT")"
{
cat <<EOF
# Bench report $(date -u +%Y-%m-%d)

Measured by \`sudo scripts/bench.sh\` (PHASES="$PHASES", LAT_N=$LAT_N, FLOOD_N=$FLOOD_N,
GARBAGE_RATE=$GARBAGE_RATE/s for $GARBAGE_FOR) on $(date -u +%Y-%m-%d):
$(nproc) cores, $CPU, Linux $(uname -r), $(go version | awk '{print $3}').
Every figure below comes from that one run; ratios compare figures of the same run.
How each row is measured is described under the table.

| # | what | measured | next to | ratio | goal | |
|---|---|---|---|---|---|---|
| 1 | deciding a known client's knock (gate.Decide) | $(get decide_ns) ns | crypto floor (1 ECDH + 1 ECDSA verify) $(get floor_ns) ns | $(get decide_ratio)× | ≤ 1.3× | $(verdict "$(get decide_ratio)" '<=' 1.3) |
| 2 | valid knocks granted per second, end to end through the knock queue (64 sources, rate limit off) | $(get thr_grant_rate)/s ($(get thr_grants) grants of $(get sent) sent at $(get offered_rate)/s) | crypto floor × $(nproc) cores $(get floor_x_cores)/s | $(get thr_vs_floor)× | — | |
| 3a | gate verdicts/s, SYN flood, no grant (drop) | $(get gnogrant_rate)/s | minimal go-nfqueue consumer accepting $(get nfqaccept_rate)/s; dropping $(get nfqdrop_rate)/s | $(get g_nogrant_vs_nfqacc)× (vs drop-all: $(get g_nogrant_vs_nfqdrop)×) | ≥ 0.9× | $(verdict "$(get g_nogrant_vs_nfqacc)" '>=' 0.9) |
| 3b | gate verdicts/s, SYN flood, granted source (accept) | $(get ggrant_rate)/s | minimal consumer accepting $(get nfqaccept_rate)/s | $(get g_grant_vs_nfqacc)× | ≥ 0.9× | $(verdict "$(get g_grant_vs_nfqacc)" '>=' 0.9) |
| 3e | gate verdicts/s, SYN flood, no grant, metrics on and scraped every second (mean of 2 runs) | $(get gmetrics_rate)/s | metrics off, alternating with them $(get gmetoff_rate)/s | $(get g_metrics_vs_off)× (runs off $(get gmetoff1_rate), $(get gmetoff2_rate); on $(get gmetrics1_rate), $(get gmetrics2_rate); $(get gmetrics_scraped_drops) drops counted by the last scrape) | ≥ 0.95× | $(verdict "$(get g_metrics_vs_off)" '>=' 0.95) |
| 3d | gate verdicts/s under the held-packet attack: SYN flood from a source whose knocks keep the workers busy (30000/s ECDH-costly garbage), every SYN racing a pending knock | $(get gholdsame_rate)/s | same flood and knock load from another address (nothing deferred) $(get gholdother_rate)/s; no knock load (3a) $(get gnogrant_rate)/s | $(get g_hold_vs_other)× (vs 3a: $(get g_hold_vs_nogrant)×); $(get ghold_deferred) SYNs deferred in all | ≥ 0.8× | $(verdict "$(get g_hold_vs_other)" '>=' 0.8) |
| 3c | kernel alone: plain DROP rule, same flood | $(get kdrop_rate)/s | minimal consumer | consumer/kernel $(get nfq_vs_kernel)× | — | |
| 4a | knock-to-open, \`sknock knock\` process start → first accepted connect, bundle decrypted by every run (the default) | p50 $(get sk_p50_ms) ms, p99 $(get sk_p99_ms) ms (n=$(get sk_n), failed $(get sk_fail)) | connect to an already open port: p50 $(get open_p50_ms) ms, p99 $(get open_p99_ms) ms | | p50 ≤ 5 ms | $(verdict "$(get sk_p50_ms)" '<=' 5) |
| 4a* | 4a with \`$KEY_CACHE\` (the unlocked key kept in the kernel's user keyring, as ssh-agent keeps it) | p50 $(get skc_p50_ms) ms, p99 $(get skc_p99_ms) ms (n=$(get skc_n), failed $(get skc_fail)) | | | p50 ≤ 5 ms | $(verdict "$(get skc_p50_ms)" '<=' 5) |
| 4a′ | where 4a goes: the \`sknock knock\` process alone, start → exit | p50 $(get run_p50_ms) ms, p99 $(get run_p99_ms) ms; with the key cache p50 $(get runc_p50_ms) ms, p99 $(get runc_p99_ms) ms | \`sknock --version\` (exec + Go runtime start) p50 $(get runv_p50_ms) ms; an empty Go program p50 $(get rune_p50_ms) ms; \`true\` (exec alone) p50 $(get runt_p50_ms) ms | | | |
| 4b | gatekeeper's own share: engine takes the knock → grant in place (\`decide_us\`) | p50 $(get skl_decide_p50_ms) ms, p99 $(get skl_decide_p99_ms) ms (n=$(get skl_decide_n)) | | | ≤ 0.5 ms | $(verdict "$(get skl_decide_p50_ms)" '<=' 0.5) |
| 4c | sealed knock datagram sent → first accepted connect (no client process; network, queue, engine, prober) | p50 $(get dg_p50_ms) ms, p99 $(get dg_p99_ms) ms (n=$(get dg_n), failed $(get dg_fail)) | | | | |
| 5 | fwknop 2.6.10 knock-to-open, same prober | pcap mode p50 $(get fwpcap_p50_ms) ms, p99 $(get fwpcap_p99_ms) ms (failed $(get fwpcap_fail)); UDP-server mode p50 $(get fwudp_p50_ms) ms, p99 $(get fwudp_p99_ms) ms (failed $(get fwudp_fail)) | sknock p50 $(get sk_p50_ms) ms; with the key cache $(get skc_p50_ms) ms | sknock faster by $(get fwpcap_speedup)× (pcap), $(get fwudp_speedup)× (UDP); with the key cache $(get fwpcap_speedup_c)× and $(get fwudp_speedup_c)× | ≥ 10× | $(verdict "$min_speedup" '>=' 10); with the key cache $(verdict "$min_speedup_c" '>=' 10) |
| 6a | legitimate knocks granted under a garbage-knock flood from one source ($(get garbage_rate)/s sent; shipped default \`knock.rate_limit: 20/second\`) | $legit_rate % ($legit_ok of $LAT_N; open p50 $(get legit_p50_ms) ms, p99 $(get legit_p99_ms) ms) | daemon: $(get gl_counter_shed) knocks shed | | ≥ 99 % | $(verdict "$legit_rate" '>=' 99) |
| 6b | granted client's connect latency under that flood | p50 $(get flood_p50_ms) ms, p99 $(get flood_p99_ms) ms (failed $(get flood_fail)) | without flood: p50 $(get calm_p50_ms) ms, p99 $(get calm_p99_ms) ms | | | |
| 6c | 6a with the rate limit off (\`knock.rate_limit: ""\`; $(get garbagerl_rate)/s sent) | $legitrl_rate % ($legitrl_ok of $LAT_N; open p50 $(get legitrl_p50_ms) ms, p99 $(get legitrl_p99_ms) ms) | daemon: $(get glrl_counter_shed) knocks shed | | — | |
| 6d | 6b with the rate limit off | p50 $(get floodrl_p50_ms) ms, p99 $(get floodrl_p99_ms) ms (failed $(get floodrl_fail)) | without flood: p50 $(get calmrl_p50_ms) ms, p99 $(get calmrl_p99_ms) ms | | | |
| 8a | fresh clients let in under a spoofed-source flood of random bytes ($(get sprand_rate)/s sent from random sources of 198.18.64.0/18, 198.18.128.0/17, 198.19.0.0/16; \`knock.rate_limit: 20/second\`) | $(get frrand_pct) % ($(get frrand_n) of $FRESH_N; open p50 $(get frrand_p50_ms) ms) | daemon: $(get slrand_counter_shed) knocks shed | | ≥ 99 % | $(verdict "$(get frrand_pct)" '>=' 99) |
| 8b | the same with one sealed knock (naming another address) replayed from random sources ($(get sprepl_rate)/s) | $(get frrepl_pct) % ($(get frrepl_n) of $FRESH_N; open p50 $(get frrepl_p50_ms) ms) | daemon: $(get slrepl_counter_shed) knocks shed | | ≥ 99 % | $(verdict "$(get frrepl_pct)" '>=' 99) |
| 8c | the same with distinct knock-shaped datagrams, each with a fresh ephemeral key (an ECDH each), by flood rate as a multiple of this host's ECDH rate ($(get ecdh_rate)/s on $(nproc) cores) | $(get spfresh10_x)× ($(get spfresh10_rate)/s): $(get frfresh10_pct) %; $(get spfresh25_x)× ($(get spfresh25_rate)/s): $(get frfresh25_pct) %; $(get spfresh50_x)× ($(get spfresh50_rate)/s): $(get frfresh50_pct) %; $(get spfresh100_x)× ($(get spfresh100_rate)/s): $(get frfresh100_pct) % | shed: $(get slfresh10_counter_shed), $(get slfresh25_counter_shed), $(get slfresh50_counter_shed), $(get slfresh100_counter_shed) | | — | |
| 8d | 8c at $(get spback_x)× for returning clients (each granted once before the flood, so shed last) | $(get frback_pct) % ($(get frback_n) of $FRESH_N; open p50 $(get frback_p50_ms) ms) | fresh clients at that rate (8c): $(get frfresh100_pct) % | | — | |
| 8e | 8b's replayed knock with its first ciphertext block randomised on every send (distinct datagrams sharing one ephemeral key; $(get spmut_rate)/s) | $(get frmut_pct) % ($(get frmut_n) of $FRESH_N; open p50 $(get frmut_p50_ms) ms) | daemon: $(get slmut_counter_shed) knocks shed | | — | |
| 9a | deciding a known client's v2 knock (gate.Decide: mac1, HPKE open, chain cached, signature) | $(get decide2_ns) ns | crypto floor (1 ECDH + 1 ECDSA verify) $(get floor_ns) ns | $(get decide2_ratio)× | ≤ 1.1× | $(verdict "$(get decide2_ratio)" '<=' 1.1) |
| 9b | refusing a v2 datagram whose mac1 is wrong (Engine.KnockLane + Engine.KnockAtOnce, as the knock reader's receive goroutine does) | $(get badmac_us) µs a datagram | | | ≤ 2 µs | $(verdict "$(get badmac_us)" '<=' 2) |
| 9c | fresh **v2** clients let in under a spoofed flood of v1-shaped datagrams with fresh ephemeral keys (8c's flood), by rate as a multiple of the ECDH rate ($(get ecdh_rate)/s) | $(v2rows a) | | | ≥ 99 % each | $(verdict "$(v2min a)" '>=' 99) |
| 9d | fresh v2 clients under a spoofed flood of v2-shaped datagrams with a wrong mac1 | $(v2rows b) | | | ≥ 99 % each | $(verdict "$(v2min b)" '>=' 99) |
| 9e | the knock queue's own ceiling: wrong-mac1 datagrams offered as fast as one sender goes ($(get spceil_rate)/s sent for $(get spceil_s) s) | $(get kqceil_rate)/s handled by sknockd's knock reader | kernel queue drops: $(get kqceil_qdrop) (queue full), $(get kqceil_udrop) (user) | | — | |
| 7a | RSS of 1,000,000 live grants (gate.GrantTable in a Go program) | +$(get grants_rss_mb) MB RSS (+$(get grants_heap_mb) MB heap; lookup $(get grants_lookup_ns) ns) | | | ≤ 200 MB | $(verdict "$(get grants_rss_mb)" '<=' 200) |
| 7b | sknockd with a 1,000,000-serial CRL ($(get crl_bytes) bytes) | RSS $(get crl_daemon_rss_mb) MB running, $(get crl_refresh_rss_mb) MB after a CRL refresh | --check's peak $(get chkbig_maxrss_mb) MB (idle sknockd with a 1-entry CRL: $(get idle_daemon_rss_mb) MB) | $(get crl_rss_vs_check)×, $(get crl_refresh_vs_check)× | ≤ 1.2× | $(verdict "$(get crl_worst_vs_check)" '<=' 1.2) |
| 7c | loading that CRL | $(get crl_load_s) s (--check $(get chkbig_wall_s) s vs $(get chksmall_wall_s) s) | | | ≤ 2 s | $(verdict "$(get crl_load_s)" '<=' 2) |

## How each row is measured

Topology: three namespaces made by the script — srv (198.18.0.1), cli
(198.18.0.2, plus 198.18.1.1–64 as extra knock sources) and mal
(198.18.2.2) — joined to srv by two veth pairs. sknockd runs in srv with
\`protect: [tcp/2000-2299]\`, policy drop, knock ports 40000–40100;
listeners on tcp/2000–2249 and tcp/2300 (open). Tools:
\`internal/bench/sknockbench\` (senders, prober, samplers) and
\`internal/bench/nfqaccept\` (the minimal consumer).

1. \`go test -run='^\$' -bench 'BenchmarkDecideKnownClient|BenchmarkCryptoFloor' -benchtime=2s -count=3 ./gate/\`, median of 3.
   DecideKnownClient is a cached certificate (the verifier's cache), so
   the floor is what is left: one ECDH, one ECDSA verification.
2. \`sknockbench seal-send\` pre-seals $THRU_N knocks (8 certificates, 64 source
   addresses, so 64 distinct grants, each knock a distinct datagram), then sends
   them from cli at 1.3× the crypto floor × cores; the rate is grants (the daemon's
   "knock" log lines with verdict grant) over the time between the first and last
   grant's log timestamps. The sender shares the 2 cores with the daemon.
3. trafgen (netsniff-ng) sends FLOOD_N TCP SYNs from cli (random source port,
   one core) to a protected port; \`sknockbench qrate\` samples
   /proc/net/netfilter/nfnetlink_queue in srv every 5 ms: packets handled = id
   sequence − user-dropped − waiting, over the window in which it grew. The same
   rules (\`sknockd --rules-script apply\`) serve the minimal consumer
   (\`nfqaccept\`, the same socket settings as sknockd's gate reader). The kernel
   row replaces the queue with a DROP rule: its counter over the window in which
   packets arrived on vc. The flood is faster than any consumer; the rest are
   kernel queue drops (${FLOOD_N} sent per run). 3d runs \`sknockbench garbage\`
   (well-formed knocks with a valid P-256 point and random ciphertext: an ECDH
   each) at 30000/s during the flood from cli's namespace and link, first from
   another of cli's addresses (the same load, nothing deferred), then from the
   flooding address (every SYN finds a knock pending: the first 4 a source, 64
   in all, go to the hold queue with NF_QUEUE in the gate's batch verdicts, the
   rest are decided at once); its ratio is between those two runs. (Sending
   the garbage from mallory's link instead slows the flood's delivery by about
   a third whatever the gate does, so that is no baseline.) 3e runs 3a's flood
   against a fresh sknockd without metrics, then against one with
   \`metrics.listen\` set, scraped every second from srv's loopback during
   the flood, twice in turn; its ratio is of the means. The gate readers
   count per reader and the scrape sums them, so the packet path is the same
   with metrics on.
4. \`sknockbench latency\`: for each of $LAT_N iterations, take the next port of
   tcp/2000-2039 (open_duration is 1 s, and the tool first checks that the port
   refuses a connect from the source, waiting out any earlier grant, so no earlier
   grant helps), start the client command
   (\`sknock knock --no-verify -q … tcp/PORT\`, a new process each time; 4a* adds
   \`$KEY_CACHE\` and another certificate, after one knock that fills the cache) and at the
   same instant a prober that starts a new TCP connect every 1 ms; the time to the
   first accepted connect is the knock-to-open latency. 4b is the \`decide_us\`
   field of sknockd's knock log line (Engine.Knock: decrypt, verify, checks, replay
   and grant insert; it leaves out the NFQUEUE delivery and the worker hand-off,
   which 4c bounds from above together with the network and the prober's 1 ms
   step). A probe that reaches the gate while its knock is being decided is held
   until the grant (gate_held) rather than dropped, so it need not wait for the
   next step. The open-port baseline is the same prober against tcp/2300.
5. The same prober and ports with fwknopd 2.6.10 in srv (its own config dir,
   \`-i vc\`, default PCAP_LOOP_SLEEP; then \`ENABLE_UDP_SERVER Y\`), a DROP rule for
   the ports behind fwknopd's FWKNOP_INPUT jump, and the \`fwknop\` client with HMAC
   (\`-A tcp/PORT -a 198.18.0.2\`).
6. \`sknockbench garbage\` sends from mal, at GARBAGE_RATE per second, datagrams of
   a real knock's size with the right protocol id and version, random ciphertext
   and a valid P-256 point (so each costs the server an ECDH). Meanwhile cli sends
   $LAT_N legitimate knocks, one datagram each, no retry, each to a fresh port;
   success = the prober connects within 1 s (64 sources × 40 ports, so each knock
   asks for a (source, port) not granted before). A granted client connects to
   tcp/2240 every 5 ms (6b), all with the shipped \`knock.rate_limit: "20/second"\`
   (hashlimit per source; the flood comes from one source). 6c/6d repeat this with
   the limit off, which leaves only the knock backlog's shedding.
8. \`sknockbench spoof\` floods the knock ports from mal through a raw socket,
   each datagram from a random source of 198.18.64.0/18, 198.18.128.0/17 and
   198.19.0.0/16 (about 114,000 addresses; as \`hping3 --rand-source\`, but
   inside the benchmarking range), at SPOOF_RATE per second (8a, 8b, 8e) or
   at a fraction of the ECDH rate (8c: \`BenchmarkECDH\` × cores; up to
   60,000 datagrams with fresh ephemeral keys made beforehand, sent round
   robin with their first ciphertext block randomised on every send, so
   that no two are alike and each costs an ECDH). 8e randomises that block
   of 8b's replayed knock on every send (distinct datagrams, one ephemeral
   key). 8d first lets the same clients knock once each without a flood,
   then repeats 8c's 1× flood. Meanwhile $FRESH_N fresh clients, each from
   its own address of cli's 198.18.3.0/24 and knocking once (one datagram
   sealed just before it is sent, no retry), are measured as in 6; shipped
   \`knock.rate_limit: "20/second"\`.
9. 9a/9b as row 1 (\`BenchmarkDecideV2KnownClient\`, \`BenchmarkRefuseBadMAC1\`, same
   \`go test\` run). 9c/9d as 8c, with the $FRESH_N fresh clients knocking in v2
   (\`sknockbench latency -protocol 2\`): 9c floods 8c's v1-shaped datagrams with
   fresh ephemeral keys, which wait in the knock reader's v1 lane; 9d floods
   v2-shaped datagrams ('a' 2.0.0, then random bytes: mac1 wrong), which the
   receive goroutine refuses at once. Rates are multiples ($V2_MULTS) of the
   ECDH rate; the sender's actual rate is shown. 9e floods wrong-mac1 datagrams
   at up to CEIL_RATE=$CEIL_RATE/s for 10 s while \`sknockbench qrate\` samples
   the knock queue (100): the rate its packets were handled at, and what the
   kernel dropped.
7. \`sknockbench grants\` fills a gate.GrantTable with 1,000,000 grants (addresses
   of 198.18.0.0/15 × 8 ports; nothing sent — a million sources over the wire is
   impractical) and reports the process RSS growth after a GC. \`sknockbench crl\`
   signs a CRL of 1,000,000 random 128-bit serials with the bench CA; sknockd loads
   it in \`--check\` (load time = its wall time minus that of a 1-serial CRL; peak
   RSS) and in a real start (VmRSS 2 s after start, and 2 s after a CRL refresh
   put a second such CRL in force); 7b's ratios are those RSS over --check's peak.
EOF
} > "$W/table.md"
cp "$W/table.md" "$OUT"
cat "$OUT"
log "wrote $OUT"
