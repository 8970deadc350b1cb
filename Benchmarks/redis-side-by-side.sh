#!/usr/bin/env bash
# Runs redis-benchmark against redis-server (no persistence) and meridian-server (a
# memory-durability namespace) side by side on loopback, alternating the two servers round by
# round so that both see the same machine state, and prints the Meridian/Redis throughput ratio
# of each row (median of the rounds).
#
# Usage: Benchmarks/redis-side-by-side.sh [--rounds N] [--requests N] [--clients N] [--pipelines "1 16"]
#                                         [--threads N]   (meridian-server event loops; default one per core)
# Needs: redis-server and redis-benchmark (Debian: redis-server, redis-tools), a release build
# (`scripts/build-release`), or MERIDIAN_SERVER pointing at a meridian-server binary.
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/common.sh"

rounds=3
requests=200000
clients=50
pipelines="1 16"
threads=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --pipelines) pipelines=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
binary=${MERIDIAN_SERVER:-$root/.build/release/meridian-server}
[ -x "$binary" ] || { echo "no meridian-server at $binary: run 'scripts/build-release' first" >&2; exit 1; }
command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null || {
  echo "redis-server and redis-benchmark are needed (apt-get install redis-server redis-tools)" >&2; exit 1; }

work=$(mktemp -d)
redis_port=$(free_port)
meridian_port=$(free_port)

cat > "$work/meridian.yaml" <<YAML
cluster:
  name: bench
  datacenters:
    - name: local
      nodes:
        - { name: bench-1, client: "127.0.0.1:$meridian_port" }
namespaces:
  - { name: default, prefix: "", consistency: eventual, durability: memory, eviction: lru }
YAML

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
  --logfile "$work/redis.log" &
redis_pid=$!
"$binary" --config "$work/meridian.yaml" --data-dir "$work/data" --log-level warning ${threads:+--threads "$threads"} \
  2>"$work/meridian.log" &
meridian_pid=$!
cleanup() {
  kill "$redis_pid" "$meridian_pid" 2>/dev/null || true
  wait "$redis_pid" "$meridian_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for port in "$redis_port" "$meridian_port"; do
  for _ in $(seq 100); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.05
  done
done

# One redis-benchmark run; prints requests per second.
run() {
  local port=$1 test=$2 pipeline=$3
  redis-benchmark -h 127.0.0.1 -p "$port" -t "$test" -n "$requests" -c "$clients" -d 100 -r 100000 \
    -P "$pipeline" --csv 2>/dev/null | awk -F'","' 'NR>1 {gsub(/"/,"",$2); print $2; exit}'
}


echo "redis-benchmark -t set,get -n $requests -c $clients -d 100 -r 100000, $rounds alternating rounds, median rps"
echo "meridian-server event loops: ${threads:-one per core ($(nproc))}"
printf '%-4s %-4s %14s %14s %8s\n' test -P redis meridian ratio
for pipeline in $pipelines; do
  for test in set get; do
    : > "$work/redis.rps"; : > "$work/meridian.rps"
    for round in $(seq "$rounds"); do
      # Alternate which server goes first so neither always runs on a warmer machine.
      if [ $((round % 2)) -eq 1 ]; then
        run "$redis_port" "$test" "$pipeline" >> "$work/redis.rps"
        run "$meridian_port" "$test" "$pipeline" >> "$work/meridian.rps"
      else
        run "$meridian_port" "$test" "$pipeline" >> "$work/meridian.rps"
        run "$redis_port" "$test" "$pipeline" >> "$work/redis.rps"
      fi
    done
    r=$(median < "$work/redis.rps"); m=$(median < "$work/meridian.rps")
    ratio=$(awk -v m="$m" -v r="$r" 'BEGIN { printf "%.2f", (r > 0 ? m / r : 0) }')
    printf '%-4s %-4s %14.0f %14.0f %8s\n' "$test" "$pipeline" "$r" "$m" "$ratio"
  done
done
