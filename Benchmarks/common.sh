# Shell helpers the benchmarks share (sourced by each script, not run on its own).

# A free TCP port on loopback.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# Waits (up to 10 s) until the server on port $1 answers PING.
wait_ping() { for _ in $(seq 400); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.025; done; return 1; }

# The median of the numbers on standard input, one per line.
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# show_warnings LOG...: what the servers logged at warning level or above (a late write-back
# flush, a crash), five lines per log at most.
show_warnings() {
  for log in "$@"; do
    if grep -qiE 'warning|error|critical|crashed' "$log" 2>/dev/null; then
      echo "== $(basename "$log"):"; grep -iE 'warning|error|critical|crashed' "$log" | head -5
    fi
  done
}
