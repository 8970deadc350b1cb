#!/usr/bin/env bash
# Geo-replication in one run, on loopback (docs/PERFORMANCE.md, "Replication"):
#
# 1. Local write latency: `redis-benchmark -t set -c 50 -d 100 -r 100000 --csv` against
#    (a) a single Meridian node without peers, (b) east of a running east/west/central cluster
#    (every write shipped to west as it happens), (c) redis-server without persistence — in
#    alternating rounds — with p50/p99 per round, medians, and the ratios east/single and
#    east/redis.
# 2. Replication lag: west's `apply_lag_p50_us`/`apply_lag_p99_us` (INFO replication: the time
#    from a write's HLC stamp at east to its merge at west, over every delta of those rounds),
#    and the lag of single marked writes measured from outside: SET at east, poll GET at west.
# 3. Wire bytes: 20,000 JSON session/profile values of 200–2000 bytes written to east with
#    pipelines of 100; `bytes_raw` and `bytes_wire` (after zstd) of the deltas east shipped,
#    and, offline with the `zstd` CLI on the same values, what a trained dictionary adds for
#    batches of 4 KiB and 64 KiB.
#
# Usage: Benchmarks/replication-side-by-side.sh [--rounds N] [--requests N] [--clients N]
# Needs redis-server, redis-benchmark, redis-cli, zstd and a release build
# (`scripts/build-release`) or MERIDIAN_SERVER. All namespaces are `memory`: this measures
# replication, not the disk.
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/common.sh"

rounds=3
requests=200000
clients=50
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
binary=${MERIDIAN_SERVER:-$root/.build/release/meridian-server}
[ -x "$binary" ] || { echo "no meridian-server at $binary: run 'scripts/build-release' first" >&2; exit 1; }
for tool in redis-server redis-benchmark redis-cli zstd; do
  command -v $tool >/dev/null || { echo "$tool is needed (apt-get install redis-server redis-tools zstd)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/meridian-replication-bench.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  show_warnings "$work"/*.log
  rm -rf "$work"
}
trap cleanup EXIT


single=$(free_port); east=$(free_port); west=$(free_port)
east_peer=$(free_port); west_peer=$(free_port); central_peer=$(free_port); redis=$(free_port)
namespaces='namespaces:
  - { name: default, prefix: "", consistency: eventual, durability: memory, eviction: none }'
cat > "$work/single.yaml" <<YAML
cluster:
  name: bench-single
  datacenters:
    - name: local
      nodes:
        - { name: single, client: "127.0.0.1:$single" }
$namespaces
YAML
cat > "$work/cluster.yaml" <<YAML
cluster:
  name: bench
  datacenters:
    - name: east
      nodes:
        - { name: east-1, client: "127.0.0.1:$east", peer: "127.0.0.1:$east_peer" }
    - name: west
      nodes:
        - { name: west-1, client: "127.0.0.1:$west", peer: "127.0.0.1:$west_peer" }
    - name: central
      witness: true
      nodes:
        - { name: central-w, peer: "127.0.0.1:$central_peer" }
$namespaces
YAML
start() { # CONFIG NODE
  "$binary" --config "$work/$1.yaml" --node "$2" --data-dir "$work/$2" --log-level warning >/dev/null 2>"$work/$2.log" &
  pids+=($!)
}
start single single
start cluster central-w
start cluster east-1
start cluster west-1
redis-server --port "$redis" --bind 127.0.0.1 --save '' --appendonly no --daemonize no --logfile "$work/redis.log" >/dev/null &
pids+=($!)
for port in $single $east $west $redis; do wait_ping "$port"; done
# The east-west link is up once INFO says so.
for _ in $(seq 400); do
  redis-cli -p "$east" info replication | grep -q '^peer_west:.*connected=1' && break
  sleep 0.025
done

field() { # PORT PEER FIELD: one field of a peer line of INFO replication
  redis-cli -p "$1" info replication | tr -d '\r' | awk -F: -v peer="peer_$2" '$1==peer {print $2}' \
    | tr ',' '\n' | awk -F= -v f="$3" '$1==f {print $2}'
}
bench() { # PORT → "rps p50 p99"
  redis-benchmark -h 127.0.0.1 -p "$1" -t set -n "$requests" -c "$clients" -d 100 -r 100000 --csv 2>/dev/null \
    | awk -F'","' 'NR>1 {gsub(/"/,"",$0); split($0, f, ","); print f[2], f[5], f[7]; exit}'
}

echo "== 1. local write latency: redis-benchmark -t set -n $requests -c $clients -d 100 -r 100000, $rounds alternating rounds"
printf '%-6s %-28s %-28s %-28s\n' round "single node (rps p50 p99 ms)" "east, replicating" "redis-server"
: > "$work/single.txt"; : > "$work/east.txt"; : > "$work/redis.txt"
for round in $(seq "$rounds"); do
  s=$(bench "$single"); e=$(bench "$east"); r=$(bench "$redis")
  echo "$s" >> "$work/single.txt"; echo "$e" >> "$work/east.txt"; echo "$r" >> "$work/redis.txt"
  printf '%-6s %-28s %-28s %-28s\n' "$round" "$s" "$e" "$r"
done
col() { awk -v c="$2" '{print $c}' "$work/$1.txt" | median; }
for c in 1 2 3; do eval "single_$c=$(col single $c) east_$c=$(col east $c) redis_$c=$(col redis $c)"; done
printf 'medians: single %s rps p50 %s p99 %s | east %s rps p50 %s p99 %s | redis %s rps p50 %s p99 %s\n' \
  "$single_1" "$single_2" "$single_3" "$east_1" "$east_2" "$east_3" "$redis_1" "$redis_2" "$redis_3"
awk -v e50="$east_2" -v e99="$east_3" -v s50="$single_2" -v s99="$single_3" -v r50="$redis_2" -v r99="$redis_3" 'BEGIN {
  printf "p99 east/single %.2f (target <= 1.2), p50 east/single %.2f; p99 east/redis %.2f, p50 east/redis %.2f\n", e99/s99, e50/s50, e99/r99, e50/r50 }'

echo "== 2. replication lag east -> west"
echo "west applied $(field "$west" east deltas_applied) deltas from east: apply lag p50 $(field "$west" east apply_lag_p50_us) us, p99 $(field "$west" east apply_lag_p99_us) us (HLC stamp at east to merge at west, 1 ms resolution)"
python3 - "$east" "$west" <<'PY'
import socket, sys, time
def connect(port):
    s = socket.create_connection(("127.0.0.1", port)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1); return s
def call(s, *args):
    s.sendall(("*%d\r\n" % len(args) + "".join("$%d\r\n%s\r\n" % (len(a), a) for a in args)).encode())
    data = b""
    while not data.endswith(b"\r\n") or (data.startswith(b"$") and data.count(b"\r\n") < 2 and not data.startswith(b"$-1")):
        data += s.recv(65536)
    return data
east, west = connect(int(sys.argv[1])), connect(int(sys.argv[2]))
lags = []
for i in range(500):
    value = "mark-%d" % i
    start = time.perf_counter()
    call(east, "SET", "lag:probe", value)
    while value.encode() not in call(west, "GET", "lag:probe"):
        pass
    lags.append((time.perf_counter() - start) * 1000)
    time.sleep(0.002)
lags.sort()
print("single writes, SET at east until GET at west sees it (500 probes, idle cluster): p50 %.2f ms, p99 %.2f ms, max %.2f ms"
      % (lags[len(lags) // 2], lags[int(len(lags) * 0.99)], lags[-1]))
PY

echo "== 3. wire bytes for JSON session/profile values of 200-2000 bytes"
raw_before=$(field "$east" west bytes_raw); wire_before=$(field "$east" west bytes_wire)
python3 - "$east" "$work/values" <<'PY'
import json, os, random, socket, sys
rng = random.Random(42)
first = ["ana", "bruno", "chen", "dara", "emeka", "fatima", "goran", "hana", "ivan", "julia", "kofi", "lena"]
last = ["silva", "wang", "kumar", "smith", "garcia", "müller", "okafor", "rossi", "novak", "tanaka"]
cities = ["Lisbon", "Austin", "Pune", "Lagos", "Osaka", "Berlin", "Toronto", "Nairobi", "Lima", "Oslo"]
skus = ["SKU-%05d" % n for n in range(2000)]
def value(n):
    user = {"user_id": 100000 + n, "session": "%032x" % rng.getrandbits(128),
            "name": rng.choice(first).title() + " " + rng.choice(last).title(),
            "email": "%s.%s%d@example.com" % (rng.choice(first), rng.choice(last), rng.randint(1, 999)),
            "locale": rng.choice(["en-US", "pt-PT", "de-DE", "ja-JP", "fr-FR"]), "city": rng.choice(cities),
            "last_seen": "2026-11-%02dT%02d:%02d:%02dZ" % (rng.randint(1, 28), rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59)),
            "preferences": {"theme": rng.choice(["dark", "light"]), "newsletter": rng.random() < 0.5,
                            "currency": rng.choice(["EUR", "USD", "JPY"])}, "cart": [], "recently_viewed": []}
    target = rng.randint(200, 2000)
    while len(json.dumps(user)) < target:
        if rng.random() < 0.5:
            user["cart"].append({"sku": rng.choice(skus), "qty": rng.randint(1, 4), "price_cents": rng.randint(199, 99999)})
        else:
            user["recently_viewed"].append(rng.choice(skus))
    return json.dumps(user)
values = [value(n) for n in range(20000)]
os.makedirs(sys.argv[2], exist_ok=True)
with open(os.path.join(sys.argv[2], "all.ndjson"), "w") as f:
    f.write("\n".join(values))
for n in range(2000):
    with open(os.path.join(sys.argv[2], "sample-%d.json" % n), "w") as f:
        f.write(values[n])
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
sizes = [len(v.encode()) for v in values]
for start in range(0, len(values), 100):
    chunk = values[start:start + 100]
    payload = b"".join(b"*3\r\n$3\r\nSET\r\n$%d\r\nprofile:%d\r\n$%d\r\n%s\r\n" % (len(b"profile:%d" % (start + i)), start + i, len(v.encode()), v.encode()) for i, v in enumerate(chunk))
    s.sendall(payload)
    replies = b""
    while replies.count(b"\r\n") < len(chunk):
        replies += s.recv(65536)
print("%d values, %d..%d bytes, mean %d bytes" % (len(values), min(sizes), max(sizes), sum(sizes) // len(sizes)))
PY
for _ in $(seq 200); do [ "$(field "$east" west lag_ms)" = "0" ] && break; sleep 0.05; done
raw=$(( $(field "$east" west bytes_raw) - raw_before )); wire=$(( $(field "$east" west bytes_wire) - wire_before ))
awk -v r="$raw" -v w="$wire" 'BEGIN { printf "shipped by east: %d raw bytes, %d wire bytes (frames included): %.2fx reduction (target >= 3x)\n", r, w, r/w }'
cd "$work/values"
zstd -q --train sample-*.json -o dict --maxdict=65536 2>/dev/null
for size in 4096 65536; do
  split -b "$size" -d -a 5 all.ndjson "batch$size-"
  plain=0; dict=0; total=0
  for f in batch$size-*; do
    total=$((total + $(stat -c %s "$f")))
    plain=$((plain + $(zstd -q -3 -c "$f" | wc -c)))
    dict=$((dict + $(zstd -q -3 -D dict -c "$f" | wc -c)))
  done
  awk -v s="$size" -v t="$total" -v p="$plain" -v d="$dict" 'BEGIN { printf "offline, %d-byte batches of the same values, zstd -3: %.2fx without a dictionary, %.2fx with a 64 KiB trained dictionary\n", s, t/p, t/d }'
done
