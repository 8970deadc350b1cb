#!/usr/bin/env bash
# Durable writes side by side with redis-server on the same disk, alternating round by round:
#   Meridian write-through  vs  redis-server --appendonly yes --appendfsync always
#   Meridian write-back     vs  redis-server --appendonly yes --appendfsync everysec
# with `redis-benchmark -t set -n N -c 50 -d 100 -r 100000` (`--keyspace 0`: without -r, the
# issue's exact command, where every SET writes the one key `key:__rand_int__`), and prints each
# round's requests per second, the medians and the Meridian/Redis ratios. Then, unless
# --skip-restart, it measures restart time with 1,000,000 keys of 100 bytes: Meridian from
# process start until `INFO persistence` says loading:0 (and until it answers PING), and
# Redis reloading the same keys from its AOF.
#
# Usage: Benchmarks/durability-side-by-side.sh [--rounds N] [--requests N] [--clients N] [--threads N] [--keyspace N]
#                                              [--restart-keys N] [--skip-restart] [--dir DIR]
#                                              [--audit-retention D (default 7d, the namespaces' default; 0: no audit log)]
# The data directories go under --dir (default: a fresh directory under /var/tmp, which must
# be a real disk, not tmpfs: fsync is the point). Needs redis-server, redis-benchmark,
# redis-cli and a release build (`scripts/build-release`) or MERIDIAN_SERVER.
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/common.sh"

rounds=3
requests=100000
clients=50
restart_keys=1000000
skip_restart=""
base_dir=/var/tmp
threads=""
keyspace=100000
audit_retention=7d
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --restart-keys) restart_keys=$2; shift 2 ;;
    --skip-restart) skip_restart=1; shift ;;
    --threads) threads=$2; shift 2 ;;
    --keyspace) keyspace=$2; shift 2 ;;
    --dir) base_dir=$2; shift 2 ;;
    --audit-retention) audit_retention=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
binary=${MERIDIAN_SERVER:-$root/.build/release/meridian-server}
[ -x "$binary" ] || { echo "no meridian-server at $binary: run 'scripts/build-release' first" >&2; exit 1; }
for tool in redis-server redis-benchmark redis-cli; do
  command -v $tool >/dev/null || { echo "$tool is needed (apt-get install redis-server redis-tools)" >&2; exit 1; }
done

work=$(mktemp -d "$base_dir/meridian-durability-bench.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  show_warnings "$work"/meridian-*.log
  rm -rf "$work"
}
trap cleanup EXIT
echo "data under $work ($(df -T "$work" | awk 'NR==2 {print $2}') on $(df "$work" | awk 'NR==2 {print $1}'))"


# start_meridian NAME DURABILITY: sets $port; logs in $work/NAME.log. (Not called in $(...):
# the server would hold the substitution's pipe open.)
start_meridian() {
  local name=$1 durability=$2
  port=$(free_port)
  cat > "$work/$name.yaml" <<YAML
cluster:
  name: bench
  datacenters:
    - name: local
      nodes:
        - { name: $name, client: "127.0.0.1:$port" }
namespaces:
  - { name: default, prefix: "", consistency: eventual, durability: $durability, eviction: none, audit_retention: $audit_retention }
YAML
  "$binary" --config "$work/$name.yaml" --data-dir "$work/$name" --log-level warning ${threads:+--threads "$threads"} \
    >/dev/null 2>"$work/$name.log" &
  pids+=($!)
  wait_ping "$port"
}

# start_redis NAME FSYNC: sets $port.
start_redis() {
  local name=$1 fsync=$2
  port=$(free_port)
  mkdir -p "$work/$name"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly yes --appendfsync "$fsync" \
    --dir "$work/$name" --daemonize no --logfile "$work/$name.log" >/dev/null &
  pids+=($!)
  wait_ping "$port"
}

run() {
  local random=()
  [ "$keyspace" -gt 0 ] && random=(-r "$keyspace")
  redis-benchmark -h 127.0.0.1 -p "$1" -t set -n "$requests" -c "$clients" -d 100 "${random[@]}" --csv 2>/dev/null \
    | awk -F'","' 'NR>1 {gsub(/"/,"",$2); print $2; exit}'
}

start_meridian meridian-wt write-through; m_wt=$port
start_meridian meridian-wb write-back; m_wb=$port
start_redis redis-always always; r_always=$port
start_redis redis-everysec everysec; r_everysec=$port

echo "redis-benchmark -t set -n $requests -c $clients -d 100$([ "$keyspace" -gt 0 ] && echo " -r $keyspace"), $rounds alternating rounds"
declare -a wt=() always=() wb=() everysec=()
for round in $(seq "$rounds"); do
  a=$(run "$m_wt"); b=$(run "$r_always"); c=$(run "$m_wb"); d=$(run "$r_everysec")
  wt+=("$a"); always+=("$b"); wb+=("$c"); everysec+=("$d")
  echo "round $round: meridian write-through $a, redis always $b, meridian write-back $c, redis everysec $d"
done
mw=$(printf '%s\n' "${wt[@]}" | median); ra=$(printf '%s\n' "${always[@]}" | median)
mb=$(printf '%s\n' "${wb[@]}" | median); re=$(printf '%s\n' "${everysec[@]}" | median)
printf '%-48s %12s %12s %7s\n' "row (median rps)" "meridian" "redis" "ratio"
printf '%-48s %12.0f %12.0f %7.2f\n' "write-through vs appendfsync always" "$mw" "$ra" "$(echo "$mw / $ra" | bc -l)"
printf '%-48s %12.0f %12.0f %7.2f\n' "write-back vs appendfsync everysec" "$mb" "$re" "$(echo "$mb / $re" | bc -l)"
echo "meridian write-through: $(redis-cli -p "$m_wt" info persistence | tr -d '\r' | grep -E '^(syncs|synced_states|sync_latency_us):' | tr '\n' ' ')"
echo "meridian write-back:    $(redis-cli -p "$m_wb" info persistence | tr -d '\r' | grep -E '^(syncs|synced_states|sync_latency_us|write_back_late_flushes):' | tr '\n' ' ')"

[ -n "$skip_restart" ] && exit 0

# Restart time: the same keys into a fresh Meridian (write-back) and a fresh Redis (AOF).
echo
echo "restart with $restart_keys keys of 100 bytes"
python3 - "$restart_keys" > "$work/load.resp" <<'PY'
import sys
count = int(sys.argv[1])
value = b"v" * 100
out = sys.stdout.buffer
for i in range(count):
    key = b"key:%09d" % i
    out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$100\r\n%s\r\n" % (len(key), key, value))
PY
start_meridian meridian-restart write-back; m_r=$port
start_redis redis-restart everysec; r_r=$port
redis-cli -p "$m_r" --pipe < "$work/load.resp" | tail -1
redis-cli -p "$r_r" --pipe < "$work/load.resp" | tail -1
redis-cli -p "$m_r" save >/dev/null
m_keys=$(redis-cli -p "$m_r" dbsize); r_keys=$(redis-cli -p "$r_r" dbsize)
echo "loaded: meridian $m_keys keys, redis $r_keys keys; store sizes: meridian $(du -sh "$work/meridian-restart" | cut -f1), redis $(du -sh "$work/redis-restart" | cut -f1)"
# Stop both gracefully (SIGTERM), then time the restarts.
for port in "$m_r" "$r_r"; do redis-cli -p "$port" shutdown >/dev/null 2>&1 || true; done
kill "${pids[-1]}" "${pids[-2]}" 2>/dev/null || true
wait "${pids[-1]}" "${pids[-2]}" 2>/dev/null || true

python3 - "$binary" "$work" <<'PY'
import socket, subprocess, sys, time
binary, work = sys.argv[1], sys.argv[2]

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close(); return port

def ask(port, *command):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"*%d\r\n" % len(command) + b"".join(b"$%d\r\n%s\r\n" % (len(c), c) for c in command))
            data = b""
            while not data.endswith(b"\r\n") or (data.startswith(b"$") and data.count(b"\r\n") < 2):
                chunk = s.recv(65536)
                if not chunk: break
                data += chunk
            return data
    except OSError:
        return None

def timed(name, argv, port):
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_ping = None
    while True:
        reply = ask(port, b"PING")
        if reply and first_ping is None and reply.startswith(b"+PONG"):
            first_ping = time.monotonic() - start
        info = ask(port, b"INFO", b"persistence") if reply and reply.startswith(b"+PONG") else None
        if info and b"loading:0" in info:
            done = time.monotonic() - start
            break
        time.sleep(0.01)
    keys = ask(port, b"DBSIZE")
    proc.terminate(); proc.wait(30)
    print(f"{name}: answers PING after {first_ping:.2f} s, loading:0 after {done:.2f} s, DBSIZE {keys.strip().decode()}")

port = free_port()
config = open(f"{work}/meridian-restart.yaml").read()
import re
config = re.sub(r'client: "127.0.0.1:\d+"', f'client: "127.0.0.1:{port}"', config)
open(f"{work}/meridian-restart.yaml", "w").write(config)
timed("meridian (RocksDB, write-back)", [binary, "--config", f"{work}/meridian-restart.yaml", "--data-dir",
      f"{work}/meridian-restart", "--log-level", "warning"], port)
port = free_port()
timed("redis-server (AOF everysec)", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
      "--appendonly", "yes", "--dir", f"{work}/redis-restart", "--daemonize", "no"], port)
PY
