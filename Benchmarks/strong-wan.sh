#!/usr/bin/env bash
# Strong namespaces over an emulated WAN, in one run (docs/PERFORMANCE.md, "Strong namespaces"):
# east, west and the central witness with their peer links through `meridian wan-proxy`
# (one-way delays east-west 35 ms, east-central 10 ms, west-central 12 ms: round trips 70 / 20 /
# 24 ms), every voter's Paxos store on the local disk (write-through, fsync per step).
#
# Measured with redis-benchmark (one client unless said, --csv percentiles):
# 1. Strong writes from east to a partition east leads (`SET s:{e}:N`), then from west to a
#    partition west leads (`SET s:{w}:N`): the stable case, one round trip to the nearest other
#    voter (the witness). Target: p50 <= 1.15 x that round trip (23 ms east, 27.6 ms west).
# 2. Strong reads at the lease holder (`GET s:{e}:N` at east) and elsewhere (the same GETs at
#    west, forwarded to east: the east-west round trip).
# 3. Strong writes from west to east's partition: forwarded to the leader while east's own
#    clients used it within a lease, then (east hands the partition over) west leads it.
# 4. Eventual writes at east (`SET ev:N`, 10 clients) while east's strong writes run in the same
#    moment, and alone; redis-server's SET (10 clients) side by side as the reference.
#    Target: eventual p99 < 2 ms with strong writes running.
#
# Usage: Benchmarks/strong-wan.sh [--requests N]
# Needs redis-server, redis-benchmark, redis-cli and a release build (`scripts/build-release`
# for meridian-server and meridian) or MERIDIAN_SERVER / MERIDIAN.
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/common.sh"

requests=300
while [ $# -gt 0 ]; do
  case "$1" in
    --requests) requests=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
server=${MERIDIAN_SERVER:-$root/.build/release/meridian-server}
tool=${MERIDIAN:-$root/.build/release/meridian}
for binary in "$server" "$tool"; do
  [ -x "$binary" ] || { echo "no $binary: run 'scripts/build-release' (both products) first" >&2; exit 1; }
done
for needed in redis-server redis-benchmark redis-cli; do
  command -v $needed >/dev/null || { echo "$needed is needed (apt-get install redis-server redis-tools)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/meridian-strong-bench.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  show_warnings "$work"/*.log
  rm -rf "$work"
}
trap cleanup EXIT

east=$(free_port); west=$(free_port); redis=$(free_port)
east_peer=$(free_port); west_peer=$(free_port); central_peer=$(free_port)

# The emulator: east dials west and central, west dials central (the smaller replica dials), so
# one link per pair carries that pair's traffic both ways.
"$tool" wan-proxy \
  --link "east-west=127.0.0.1:0,127.0.0.1:$west_peer,35ms" \
  --link "east-central=127.0.0.1:0,127.0.0.1:$central_peer,10ms" \
  --link "west-central=127.0.0.1:0,127.0.0.1:$central_peer,12ms" > "$work/proxy.out" 2>&1 &
pids+=($!)
for _ in $(seq 200); do grep -q '^control on' "$work/proxy.out" && break; sleep 0.02; done
link_port() { grep "^link $1 on" "$work/proxy.out" | sed -E 's/^link [^ ]+ on [^:]+:([0-9]+).*/\1/'; }
ew=$(link_port east-west); ec=$(link_port east-central); wc=$(link_port west-central)

config() {  # config NODE WEST_PEER CENTRAL_PEER
  cat <<YAML
cluster:
  name: strong-bench
  datacenters:
    - name: east
      nodes:
        - { name: east-1, client: "127.0.0.1:$east", peer: "127.0.0.1:$east_peer" }
    - name: west
      nodes:
        - { name: west-1, client: "127.0.0.1:$west", peer: "127.0.0.1:$2" }
    - name: central
      witness: true
      nodes:
        - { name: central-w, peer: "127.0.0.1:$3" }
strong: { lease: 2s, timeout: 2s }
namespaces:
  - { name: default, prefix: "", durability: memory }
  - { name: strong, prefix: "s:", consistency: strong, durability: write-through }
YAML
}
config east-1 "$ew" "$ec" > "$work/east-1.yaml"
config west-1 "$west_peer" "$wc" > "$work/west-1.yaml"
config central-w "$west_peer" "$central_peer" > "$work/central-w.yaml"

for node in central-w east-1 west-1; do
  "$server" --config "$work/$node.yaml" --node "$node" --data-dir "$work/data-$node" > "$work/$node.log" 2>&1 &
  pids+=($!)
done
redis-server --port "$redis" --save '' --appendonly no --daemonize no > "$work/redis.log" 2>&1 &
pids+=($!)
wait_ping "$east"; wait_ping "$west"; wait_ping "$redis"
for _ in $(seq 400); do
  [ "$(redis-cli -p "$east" set s:ready 1 2>/dev/null)" = OK ] && [ "$(redis-cli -p "$west" get s:ready 2>/dev/null)" = 1 ] && break
  sleep 0.05
done

# percentiles PORT CLIENTS REQUESTS COMMAND...: "p50 p99" in ms (redis-benchmark --csv).
percentiles() {
  local port=$1 clients=$2 n=$3; shift 3
  redis-benchmark -p "$port" -c "$clients" -n "$n" -r 100000 --csv "$@" \
    | awk -F'","' 'NR == 2 { gsub(/"/, "", $0); split($0, f, ","); print f[5], f[7] }'
}
report() { printf '%-58s p50 %7s ms   p99 %7s ms\n' "$1" $2; }

echo "strong namespaces over the emulated WAN (RTT east-west 70 ms, east-central 20 ms, west-central 24 ms); $requests requests per line"
# Each side first takes the lead of its partition (phase 1), then measures the stable case.
redis-cli -p "$east" set 's:{e}:warm' 1 >/dev/null
report "strong SET at east, east leads (target p50 <= 23 ms)" "$(percentiles "$east" 1 "$requests" SET 's:{e}:__rand_int__' v)"
report "strong GET at east, the lease holder (target p99 < 2 ms)" "$(percentiles "$east" 1 "$requests" GET 's:{e}:__rand_int__')"
# West uses east's partition: forwarded while east's own clients used it within a lease (2 s),
# then east hands it over and west leads it.
report "strong SET at west into east's partition (forwarded)" "$(percentiles "$west" 1 8 SET 's:{e}:__rand_int__' v)"
report "strong GET at west of east's partition (forwarded)" "$(percentiles "$west" 1 8 GET 's:{e}:__rand_int__')"
redis-benchmark -p "$west" -c 1 -n 40 -r 100000 -q SET 's:{e}:__rand_int__' v > /dev/null  # the handoff happens here
report "strong SET at west into that partition after the handoff" "$(percentiles "$west" 1 "$requests" SET 's:{e}:__rand_int__' v)"
sleep 2.5  # east's lease on {w} (if any) lapses; west leads its own partition from here
redis-cli -p "$west" set 's:{w}:warm' 1 >/dev/null
report "strong SET at west, west leads (target p50 <= 27.6 ms)" "$(percentiles "$west" 1 "$requests" SET 's:{w}:__rand_int__' v)"
report "strong GET at west, the lease holder" "$(percentiles "$west" 1 "$requests" GET 's:{w}:__rand_int__')"

# Eventual writes while strong writes run at the same node.
report "eventual SET at east, 10 clients, alone" "$(percentiles "$east" 10 50000 SET 'ev:__rand_int__' v)"
percentiles "$east" 1 "$requests" SET 's:{e}:__rand_int__' v > "$work/strong-during.txt" &
strong_pid=$!
sleep 0.2
report "eventual SET at east, 10 clients, strong SETs running (target p99 < 2 ms)" "$(percentiles "$east" 10 50000 SET 'ev:__rand_int__' v)"
wait $strong_pid
report "  (the strong SETs meanwhile)" "$(cat "$work/strong-during.txt")"
report "redis-server SET, 10 clients (reference)" "$(percentiles "$redis" 10 50000 SET 'ev:__rand_int__' v)"
echo

for side in east west; do
  port=$([ $side = east ] && echo "$east" || echo "$west")
  redis-cli -p "$port" info strong | tr -d '\r' \
    | grep -E 'strong_(partitions_led|leases_held|replies|no_quorum|uncertain|synced_batches|sync_avg_us)' | sed "s/^/$side  /"
done
