#!/usr/bin/env bash
# CPU time a server process spends per request: reads utime/stime of PID from /proc before
# and after one redis-benchmark run against PORT. Less sensitive to a noisy machine than
# requests per second, and it splits user (our code and runtime) from system (the kernel).
#
# Usage: Benchmarks/cpu-per-request.sh PORT PID TEST PIPELINE [REQUESTS]
#   e.g. Benchmarks/cpu-per-request.sh 7379 "$(pgrep -f meridian-server)" get 1 200000
set -euo pipefail
port=$1 pid=$2 test=$3 pipeline=$4 requests=${5:-200000}
ticks=$(getconf CLK_TCK)
read -r user1 system1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
rps=$(redis-benchmark -h 127.0.0.1 -p "$port" -t "$test" -n "$requests" -c 50 -d 100 -r 100000 -P "$pipeline" --csv 2>/dev/null \
  | awk -F'","' 'NR>1 {gsub(/"/,"",$2); print $2; exit}')
read -r user2 system2 < <(awk '{print $14, $15}' "/proc/$pid/stat")
awk -v t="$test" -v p="$pipeline" -v rps="$rps" -v u=$((user2 - user1)) -v s=$((system2 - system1)) -v hz="$ticks" -v n="$requests" \
  'BEGIN { printf "%s -P %s: %.0f rps, user %.2f us/request, system %.2f us/request\n", t, p, rps, u * 1e6 / hz / n, s * 1e6 / hz / n }'
