#!/usr/bin/env bash
# The audit export (docs/AUDIT.md), measured:
#  1. throughput: N changes (SETs of 200-byte values, distinct keys) into an audited write-back
#     namespace, then `meridian export` of all of them: deltas per second, MB/s of NDJSON lines
#     and of the compressed file, and the CLI's and the server's peak memory (constant whatever
#     N: the server reads one chunk per call, the CLI appends frames);
#  2. impact: the same `redis-benchmark -t set,get` load against Meridian without and with
#     exports running back to back meanwhile (alternating, round by round), with redis-server's
#     figures for the same load in the same run as the reference; prints the p50/p99 and
#     requests-per-second ratios with/without, and how fast the export went meanwhile (INFO
#     persistence `audit_export_lines`).
#
# Usage: Benchmarks/audit-export.sh [--deltas N (1000000)] [--rounds N (3)] [--requests N (200000)]
#                                   [--export-rate LINES_PER_S (0: unpaced) for the exports during the load] [--dir DIR]
# Needs redis-server, redis-benchmark, redis-cli, zstd and a release build (`scripts/build-release`).
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/common.sh"

deltas=1000000
rounds=3
requests=200000
base_dir=/var/tmp
export_rate=0
while [ $# -gt 0 ]; do
  case "$1" in
    --deltas) deltas=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    --dir) base_dir=$2; shift 2 ;;
    --export-rate) export_rate=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
server=${MERIDIAN_SERVER:-$root/.build/release/meridian-server}
cli=$(dirname "$server")/meridian
[ -x "$server" ] && [ -x "$cli" ] || { echo "no release build at $(dirname "$server"): run 'scripts/build-release' first" >&2; exit 1; }
for tool in redis-server redis-benchmark redis-cli zstd; do
  command -v $tool >/dev/null || { echo "$tool is needed (apt-get install redis-server redis-tools zstd)" >&2; exit 1; }
done

work=$(mktemp -d "$base_dir/meridian-audit-bench.XXXXXX")
pids=()
exporter=""
# Stops the export loop and the export it is running.
stop_exports() {
  [ -n "$exporter" ] || return 0
  kill "$exporter" 2>/dev/null || true
  pkill -f "export --node 127.0.0.1:$m_port" 2>/dev/null || true
  wait "$exporter" 2>/dev/null || true
  exporter=""
}
cleanup() {
  stop_exports
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  show_warnings "$work"/*.log
  rm -rf "$work"
}
trap cleanup EXIT

hwm_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

port=$(free_port)
cat > "$work/meridian.yaml" <<YAML
cluster:
  name: bench
  datacenters:
    - name: local
      nodes:
        - { name: local-1, client: "127.0.0.1:$port" }
namespaces:
  - { name: ledger, prefix: "", durability: write-back, eviction: none, audit_retention: 7d }
YAML
"$server" --config "$work/meridian.yaml" --data-dir "$work/meridian" --log-level warning >/dev/null 2>"$work/meridian.log" &
server_pid=$!
pids+=($server_pid)
wait_ping "$port"
m_port=$port
r_port=$(free_port)
redis-server --port "$r_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no --logfile "$work/redis.log" >/dev/null &
pids+=($!)
wait_ping "$r_port"

echo "== loading $deltas changes (SET of 200-byte values, distinct keys) into the audited namespace"
start=$(date +%s.%N)
redis-benchmark -h 127.0.0.1 -p "$m_port" -t set -n "$deltas" -c 50 -P 16 -d 200 -r 100000000000 -q >/dev/null 2>&1
echo "loaded in $(echo "$(date +%s.%N) - $start" | bc -l | xargs printf '%.1f') s; $(redis-cli -p "$m_port" info persistence | tr -d '\r' | grep -E '^audit_log_appends:')"
appended=$(redis-cli -p "$m_port" info persistence | tr -d '\r' | awk -F: '/^audit_log_appends:/ {print $2}')
server_rss_before=$(rss_kb "$server_pid")
server_hwm_before=$(hwm_kb "$server_pid")

echo "== export of the whole log"
/usr/bin/time -f '%e %M' -o "$work/time" "$cli" export --node "127.0.0.1:$m_port" --out "$work/all.ndjson.zst" > "$work/export.out"
read -r seconds cli_rss_kb < "$work/time"
cat "$work/export.out"
exported=$(grep -oE '[0-9]+ deltas' "$work/export.out" | grep -oE '[0-9]+')
compressed=$(stat -c %s "$work/all.ndjson.zst")
plain=$(zstd -dc "$work/all.ndjson.zst" | wc -c)
[ "$exported" -eq "$appended" ] || echo "!! exported $exported deltas, the node appended $appended"
printf 'export: %d deltas in %.2f s = %.0f deltas/s; %.1f MB of lines (%.1f MB/s), %.1f MB compressed (%.1f MB/s, %.1fx)\n' \
  "$exported" "$seconds" "$(echo "$exported / $seconds" | bc -l)" "$(echo "$plain / 1000000" | bc -l)" \
  "$(echo "$plain / 1000000 / $seconds" | bc -l)" "$(echo "$compressed / 1000000" | bc -l)" \
  "$(echo "$compressed / 1000000 / $seconds" | bc -l)" "$(echo "$plain / $compressed" | bc -l)"
echo "peak memory: meridian export $((cli_rss_kb / 1024)) MiB; server resident $((server_rss_before / 1024)) MiB before the export, $(( $(rss_kb "$server_pid") / 1024 )) MiB after (peak $((server_hwm_before / 1024)) -> $(( $(hwm_kb "$server_pid") / 1024 )) MiB)"
# Constant memory: a second export of the same range must not need more.
"$cli" export --node "127.0.0.1:$m_port" --out "$work/again.ndjson.zst" >/dev/null
rm -f "$work/again.ndjson.zst"
echo "after a second whole export: server resident $(( $(rss_kb "$server_pid") / 1024 )) MiB (peak $(( $(hwm_kb "$server_pid") / 1024 )) MiB)"
start=$(date +%s.%N)
"$cli" audit verify "$work/all.ndjson.zst"
echo "verified in $(echo "$(date +%s.%N) - $start" | bc -l | xargs printf '%.1f') s"
rm -f "$work/all.ndjson.zst"

# One redis-benchmark run: prints "rps p50 p99" (ms).
load() {
  redis-benchmark -h 127.0.0.1 -p "$1" -t set,get -n "$requests" -c 50 -d 200 -r 100000 --csv 2>/dev/null \
    | awk -F'","' 'NR>1 {gsub(/"/,"",$2); gsub(/"/,"",$5); gsub(/"/,"",$7); rps+=$2; p50+=$5; p99+=$7; n++}
                   END {printf "%.0f %.3f %.3f\n", rps/n, p50/n, p99/n}'
}
# Exports back to back until killed.
export_loop() {
  while true; do
    "$cli" export --node "127.0.0.1:$m_port" --out "$work/loop.ndjson.zst" --force --rate "$export_rate" >/dev/null
  done
}

echo
echo "== impact: redis-benchmark -t set,get -n $requests -c 50 -d 200 -r 100000 (mean of SET and GET), $rounds alternating rounds; exports $([ "$export_rate" -gt 0 ] && echo "paced to $export_rate lines/s" || echo "unpaced")"
declare -a without=() with=() redis=() under_load=()
exported_lines() { redis-cli -p "$m_port" info persistence | tr -d '\r' | awk -F: '/^audit_export_lines:/ {print $2}'; }
for round in $(seq "$rounds"); do
  a=$(load "$m_port")
  export_loop & exporter=$!
  sleep 1
  lines_before=$(exported_lines); started=$(date +%s.%N)
  b=$(load "$m_port")
  lines_after=$(exported_lines); ended=$(date +%s.%N)
  stop_exports
  under_load+=("$(echo "($lines_after - $lines_before) / ($ended - $started)" | bc -l)")
  c=$(load "$r_port")
  without+=("$a"); with+=("$b"); redis+=("$c")
  printf 'round %d: meridian without export [%s], with an export running [%s] (export: %.0f lines/s meanwhile), redis-server [%s]   (rps p50 p99)\n' \
    "$round" "$a" "$b" "${under_load[-1]}" "$c"
done
column() { local field=$1; shift; printf '%s\n' "$@" | awk -v f="$field" '{print $f}' | median; }
printf '%-34s %10s %10s %10s\n' "median over rounds" "rps" "p50 ms" "p99 ms"
for row in without with redis; do
  declare -n values=$row
  printf '%-34s %10.0f %10.3f %10.3f\n' "$row" "$(column 1 "${values[@]}")" "$(column 2 "${values[@]}")" "$(column 3 "${values[@]}")"
done
printf 'with/without: rps %.2f, p50 %.2f, p99 %.2f\n' \
  "$(echo "$(column 1 "${with[@]}") / $(column 1 "${without[@]}")" | bc -l)" \
  "$(echo "$(column 2 "${with[@]}") / $(column 2 "${without[@]}")" | bc -l)" \
  "$(echo "$(column 3 "${with[@]}") / $(column 3 "${without[@]}")" | bc -l)"
printf 'export under that load: %.0f lines/s (median)\n' "$(printf '%s\n' "${under_load[@]}" | median)"
printf 'meridian without export / redis-server: rps %.2f, p99 %.2f\n' \
  "$(echo "$(column 1 "${without[@]}") / $(column 1 "${redis[@]}")" | bc -l)" \
  "$(echo "$(column 3 "${without[@]}") / $(column 3 "${redis[@]}")" | bc -l)"
