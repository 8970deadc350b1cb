#!/usr/bin/env bash
# A data center of three nodes on loopback, in one run (docs/PERFORMANCE.md, "Scale-out: a data
# center of three real processes"): three `meridian-server` processes with three replicas of every partition
# (partitions 1024), and redis-server side by side as the reference.
#
# 1. Client cost: `redis-benchmark -t set,get -c 50 -d 100 -r 100000 --csv` through one node
#    (two thirds of the commands forwarded to their partition's primary; every SET waits for a
#    quorum of the three replicas) and against redis-server, in alternating rounds: requests/s
#    and p50/p99 per round, medians, ratios.
# 2. Hint replay: one node killed with SIGKILL, `--hints` SETs of fresh keys through another
#    (the live coordinators keep a hint per write for the dead replica), the node restarted:
#    from the moment both others see it alive, the time until no hint is held, and the hints
#    replayed in it (INFO's `cluster_hints_replayed`) per second.
# 3. Anti-entropy on an idle data center: CPU seconds of the three nodes over 10 s with a pass
#    every second, against the same nodes with passes every 10 minutes.
# 4. Anti-entropy on a diverged one: one node killed, `--hints` SETs while its hints are
#    bounded to 1 MiB (most are dropped), the node restarted: the time until every partition's
#    digest is equal on the three nodes, the entries anti-entropy sent, the CPU it took.
#
# Usage: Benchmarks/scale-out.sh [--rounds N] [--requests N] [--hints N]
# Needs redis-server, redis-benchmark, redis-cli and a release build (`scripts/build-release
# --product meridian-server`) or MERIDIAN_SERVER.
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/common.sh"

rounds=3
requests=100000
hints=50000
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    --hints) hints=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
server=${MERIDIAN_SERVER:-$root/.build/release/meridian-server}
[ -x "$server" ] || { echo "no meridian-server at $server: run 'scripts/build-release --product meridian-server' first" >&2; exit 1; }
for needed in redis-server redis-benchmark redis-cli; do
  command -v $needed >/dev/null || { echo "$needed is needed (apt-get install redis-server redis-tools)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/meridian-scale-out.XXXXXX)
declare -A pid
redis_pid=""
cleanup() {
  for node in "${!pid[@]}"; do kill "${pid[$node]}" 2>/dev/null || true; done
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  show_warnings "$work"/*.log
  rm -rf "$work"
}
trap cleanup EXIT

declare -A client peer
for node in e1 e2 e3; do client[$node]=$(free_port); peer[$node]=$(free_port); done

# write_config FILE ANTI_ENTROPY_INTERVAL HINTS_BYTES_MAX
write_config() {
  {
    echo "cluster:"
    echo "  name: bench"
    echo "  partitions: 1024"
    echo "  replication_factor: 3"
    echo "  anti_entropy_interval: $2"
    echo "  hints_bytes_max: $3"
    echo "  datacenters:"
    echo "    - name: east"
    echo "      nodes:"
    for node in e1 e2 e3; do
      echo "        - { name: $node, client: \"127.0.0.1:${client[$node]}\", peer: \"127.0.0.1:${peer[$node]}\" }"
    done
    echo "namespaces:"
    echo "  - { name: default, prefix: \"\", durability: write-back, eviction: none }"
  } > "$1"
}

start_node() {  # start_node NODE CONFIG
  "$server" --config "$2" --node "$1" --data-dir "$work/data-$1" --threads 2 >> "$work/$1.log" 2>&1 &
  pid[$1]=$!
  wait_ping "${client[$1]}" || { echo "$1 did not start" >&2; tail -5 "$work/$1.log" >&2; exit 1; }
}

field() { redis-cli -p "${client[$1]}" info cluster | tr -d '\r' | awk -F: -v f="$2" '$1 == f { print $2 }'; }

wait_members() {
  for _ in $(seq 800); do
    ok=1
    for node in "$@"; do
      [ "$(field "$node" cluster_members_alive)" = "$#" ] && [ "$(field "$node" cluster_partitions_rebuilding)" = "0" ] || ok=0
    done
    [ $ok = 1 ] && return 0
    sleep 0.025
  done
  echo "the members did not see each other" >&2; exit 1
}

start_all() {  # start_all CONFIG
  for node in e1 e2 e3; do rm -rf "$work/data-$node"; start_node $node "$1"; done
  wait_members e1 e2 e3
}

stop_all() {
  for node in "${!pid[@]}"; do kill "${pid[$node]}" 2>/dev/null || true; wait "${pid[$node]}" 2>/dev/null || true; done
  pid=()
}

cpu_seconds() {  # the user+system CPU seconds of a process so far
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}

digests() {  # every partition's digest at node $1, one per line
  seq 0 1023 | sed 's/^/cluster digest /' | redis-cli -p "${client[$1]}" 2>/dev/null
}

digests_equal() {
  local a b c
  a=$(digests e1); b=$(digests e2); c=$(digests e3)
  [ -n "$a" ] && [ "$a" = "$b" ] && [ "$b" = "$c" ]
}

now_ms() { date +%s%3N; }

echo "== 1. client cost through one node of three (RF 3, quorum writes) vs redis-server"
config="$work/fast.yaml"
write_config "$config" 10m 256mb
start_all "$config"
redis_port=$(free_port)
redis-server --port "$redis_port" --save '' --appendonly no > "$work/redis.log" 2>&1 &
redis_pid=$!
wait_ping "$redis_port"
bench() {  # bench PORT -> "set_rps set_p50 set_p99 get_rps get_p50 get_p99"
  redis-benchmark -p "$1" -t set,get -c 50 -d 100 -r 100000 -n "$requests" --csv 2>/dev/null \
    | tr -d '"' | awk -F, '$1 == "SET" || $1 == "GET" { printf "%s %s %s ", $2, $5, $7 }'
  echo
}
: > "$work/meridian.rounds"; : > "$work/redis.rounds"
for round in $(seq "$rounds"); do
  m=$(bench "${client[e1]}"); r=$(bench "$redis_port")
  echo "round $round  meridian: set $(echo $m | awk '{print $1" rps p50 "$2" p99 "$3}') get $(echo $m | awk '{print $4" rps p50 "$5" p99 "$6}')"
  echo "round $round  redis:    set $(echo $r | awk '{print $1" rps p50 "$2" p99 "$3}') get $(echo $r | awk '{print $4" rps p50 "$5" p99 "$6}')"
  echo "$m" >> "$work/meridian.rounds"; echo "$r" >> "$work/redis.rounds"
done
for column in 1 4; do
  name=$([ $column = 1 ] && echo SET || echo GET)
  m=$(awk -v c=$column '{print $c}' "$work/meridian.rounds" | median)
  r=$(awk -v c=$column '{print $c}' "$work/redis.rounds" | median)
  mp99=$(awk -v c=$((column + 2)) '{print $c}' "$work/meridian.rounds" | median)
  rp99=$(awk -v c=$((column + 2)) '{print $c}' "$work/redis.rounds" | median)
  echo "median $name: meridian $m rps (p99 $mp99 ms), redis $r rps (p99 $rp99 ms): throughput ratio $(awk -v a="$m" -v b="$r" 'BEGIN { printf "%.2f", a / b }')"
done
echo "forwarded by e1: $(field e1 cluster_commands_forwarded), writes replicated by all: $(( $(field e1 cluster_writes_replicated) + $(field e2 cluster_writes_replicated) + $(field e3 cluster_writes_replicated) ))"
kill "$redis_pid"; wait "$redis_pid" 2>/dev/null || true; redis_pid=""

echo "== 2. hint replay: e2 killed, $hints SETs through e1, e2 restarted"
kill -9 "${pid[e2]}"; wait "${pid[e2]}" 2>/dev/null || true; unset 'pid[e2]'
for _ in $(seq 400); do [ "$(field e1 cluster_members_alive)" = "2" ] && break; sleep 0.025; done
for _ in $(seq 400); do [ "$(field e3 cluster_members_alive)" = "2" ] && break; sleep 0.025; done
redis-benchmark -p "${client[e1]}" -t set -c 20 -d 100 -r 1000000000 -n "$hints" -q > /dev/null 2>&1
sleep 1  # a replica timeout (500 ms) and more: the last writes' hints are stored
held=$(( $(field e1 cluster_hints_held) + $(field e3 cluster_hints_held) ))
replayed_before=$(( $(field e1 cluster_hints_replayed) + $(field e3 cluster_hints_replayed) ))
echo "hints held for e2: $held"
start_node e2 "$config"
for _ in $(seq 800); do
  [ "$(field e1 cluster_members_alive)" = "3" ] && [ "$(field e3 cluster_members_alive)" = "3" ] && break
  sleep 0.005
done
start=$(now_ms)
for _ in $(seq 24000); do
  [ "$(field e1 cluster_hints_held)" = "0" ] && [ "$(field e3 cluster_hints_held)" = "0" ] && break
  sleep 0.025
done
elapsed=$(( $(now_ms) - start ))
replayed=$(( $(field e1 cluster_hints_replayed) + $(field e3 cluster_hints_replayed) - replayed_before ))
echo "$replayed hints replayed in ${elapsed} ms from the moment e1 and e3 saw e2 alive: $(awk -v h="$replayed" -v ms="$elapsed" 'BEGIN { printf "%.0f", h / (ms / 1000) }') hints/s"
stop_all

echo "== 3. anti-entropy on an idle data center: CPU over 10 s"
for interval in 10m 1s; do
  config="$work/ae-$interval.yaml"
  write_config "$config" "$interval" 256mb
  start_all "$config"
  redis-benchmark -p "${client[e1]}" -t set -c 20 -d 100 -r 100000 -n 100000 -q > /dev/null 2>&1
  sleep 1
  before=0; for node in e1 e2 e3; do before=$(awk -v a="$before" -v b="$(cpu_seconds "${pid[$node]}")" 'BEGIN { print a + b }'); done
  sent_before=$(( $(field e1 cluster_messages_sent) + $(field e2 cluster_messages_sent) + $(field e3 cluster_messages_sent) ))
  sleep 10
  after=0; for node in e1 e2 e3; do after=$(awk -v a="$after" -v b="$(cpu_seconds "${pid[$node]}")" 'BEGIN { print a + b }'); done
  sent_after=$(( $(field e1 cluster_messages_sent) + $(field e2 cluster_messages_sent) + $(field e3 cluster_messages_sent) ))
  echo "anti_entropy_interval $interval: $(awk -v a="$after" -v b="$before" 'BEGIN { printf "%.2f", a - b }') CPU s for the three nodes over 10 s, $((sent_after - sent_before)) messages, entries sent $(( $(field e1 cluster_anti_entropy_entries_sent) + $(field e2 cluster_anti_entropy_entries_sent) + $(field e3 cluster_anti_entropy_entries_sent) ))"
  stop_all
done

echo "== 4. anti-entropy on a diverged data center: e2 misses $hints SETs, hints bounded to 1 MiB"
config="$work/diverged.yaml"
write_config "$config" 5s 1mb
start_all "$config"
kill -9 "${pid[e2]}"; wait "${pid[e2]}" 2>/dev/null || true; unset 'pid[e2]'
for _ in $(seq 400); do [ "$(field e1 cluster_members_alive)" = "2" ] && break; sleep 0.025; done
redis-benchmark -p "${client[e1]}" -t set -c 20 -d 100 -r 1000000000 -n "$hints" -q > /dev/null 2>&1
echo "hints held $(( $(field e1 cluster_hints_held) + $(field e3 cluster_hints_held) )), dropped for the bound $(( $(field e1 cluster_hints_dropped_for_bound) + $(field e3 cluster_hints_dropped_for_bound) ))"
cpu_before=0; for node in e1 e3; do cpu_before=$(awk -v a="$cpu_before" -v b="$(cpu_seconds "${pid[$node]}")" 'BEGIN { print a + b }'); done
start=$(now_ms)
start_node e2 "$config"
# Polled every 2 s (each poll asks the three nodes for 1,024 digests: part of the CPU below).
for _ in $(seq 150); do digests_equal && break; sleep 2; done
elapsed=$(( $(now_ms) - start ))
cpu_after=0; for node in e1 e2 e3; do cpu_after=$(awk -v a="$cpu_after" -v b="$(cpu_seconds "${pid[$node]}")" 'BEGIN { print a + b }'); done
if digests_equal; then state="equal"; else state="NOT equal"; fi
echo "digests $state ${elapsed} ms after the restart (pass interval 5 s); entries sent by anti-entropy $(( $(field e1 cluster_anti_entropy_entries_sent) + $(field e2 cluster_anti_entropy_entries_sent) + $(field e3 cluster_anti_entropy_entries_sent) )), repairs $(( $(field e1 cluster_anti_entropy_repairs) + $(field e2 cluster_anti_entropy_repairs) + $(field e3 cluster_anti_entropy_repairs) )), CPU $(awk -v a="$cpu_after" -v b="$cpu_before" 'BEGIN { printf "%.2f", a - b }') s (three nodes, including e2's start)"
