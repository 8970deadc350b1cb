"""Durable namespaces against real crashes.

What it proves, and how:
- write-through: several connections write while the node is killed with SIGKILL at a random
  moment; after a restart every acknowledged write is there with its acknowledged value or a
  later one that was in flight. Several cycles, each checking every earlier cycle too.
- write-back: the same workload, with each acknowledgement's time recorded; every write
  acknowledged more than `write_back_window` before the kill must survive it.
- restart honours TTLs (keys that expired while the node was down are gone), FLUSHALL
  clears the disk, SAVE closes the write-back window, SIGTERM flushes write-back, eviction of a
  durable key drops only its memory copy (misses load it from disk), `memory` namespaces
  never touch the disk, and a data directory in use is refused clearly.
The kill moment comes from a seeded generator; the seed is printed so a failure can be replayed.
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import threading
import time

import pytest
import redis

from conftest import MERIDIAN_SERVER, free_port, make_config, wait_for

NAMESPACES = (
    '  - { name: default, prefix: "", durability: memory, eviction: lru }\n'
    '  - { name: wt, prefix: "wt:", durability: write-through, eviction: none }\n'
    '  - { name: wb, prefix: "wb:", durability: write-back, eviction: none, write_back_window: 100ms }\n'
    '  - { name: slow, prefix: "slow:", durability: write-back, eviction: none, write_back_window: 60s }\n'
)
WRITE_BACK_WINDOW_S = 0.100
WRITERS = 4
KEYS_PER_WRITER = 40
CYCLES = 3


class Workload:
    """Writers that each own their keys and write increasing values, recording what was acked."""

    def __init__(self, server, prefix: str, cycle: int):
        self.server = server
        self.prefix = prefix
        self.cycle = cycle
        self.lock = threading.Lock()
        # key -> list of (n, ack_monotonic) in order; key -> highest n attempted
        self.acked: dict[str, list[tuple[int, float]]] = {}
        self.attempted: dict[str, int] = {}
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.write, args=(w,), daemon=True) for w in range(WRITERS)]

    def key(self, writer: int, n: int) -> str:
        return f"{self.prefix}c{self.cycle}:w{writer}:k{n % KEYS_PER_WRITER}"

    def write(self, writer: int) -> None:
        client = self.server.client(socket_timeout=5)
        n = 0
        while not self.stop.is_set():
            key = self.key(writer, n)
            with self.lock:
                self.attempted[key] = n
            try:
                client.set(key, str(n))
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                return
            moment = time.monotonic()
            with self.lock:
                self.acked.setdefault(key, []).append((n, moment))
            n += 1

    def run_until_killed(self, rng: random.Random) -> float:
        for thread in self.threads:
            thread.start()
        time.sleep(rng.uniform(0.3, 1.2))
        moment = self.server.kill9()
        self.stop.set()
        for thread in self.threads:
            thread.join(10)
        return moment


def check_write_through(server, workload: Workload) -> int:
    """Every acked write is present (or a later attempted one). Returns the number of keys."""
    client = server.client()
    keys = sorted(workload.acked)
    values = client.mget(keys) if keys else []
    for key, got in zip(keys, values):
        last_acked = workload.acked[key][-1][0]
        assert got is not None, f"{key}: acknowledged value {last_acked} lost"
        assert last_acked <= int(got) <= workload.attempted[key], \
            f"{key}: got {got}, acknowledged {last_acked}, attempted up to {workload.attempted[key]}"
    return len(keys)


def check_write_back(server, workload: Workload, kill_moment: float) -> tuple[int, int]:
    """Writes acked more than the window before the kill are present. Returns (keys, writes lost)."""
    client = server.client()
    keys = sorted(workload.acked)
    values = client.mget(keys) if keys else []
    lost = 0
    for key, got in zip(keys, values):
        history = workload.acked[key]
        must_have = [n for n, moment in history if moment <= kill_moment - WRITE_BACK_WINDOW_S]
        have = -1 if got is None else int(got)
        if must_have:
            assert have >= must_have[-1], \
                f"{key}: got {got}, but {must_have[-1]} was acknowledged more than the window before the kill"
        assert have <= workload.attempted[key], f"{key}: got {got}, never attempted"
        lost += sum(1 for n, _ in history if n > have)
    return len(keys), lost


def test_write_through_survives_sigkill(start_meridian):
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)
    server = start_meridian(make_config(NAMESPACES))
    finished: list[Workload] = []
    for cycle in range(CYCLES):
        workload = Workload(server, "wt:", cycle)
        workload.run_until_killed(rng)
        assert sum(len(v) for v in workload.acked.values()) > 0, "no write was acknowledged before the kill"
        finished.append(workload)
        server.start()
        for earlier in finished:
            check_write_through(server, earlier)


def test_write_back_loses_at_most_the_window(start_meridian):
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)
    server = start_meridian(make_config(NAMESPACES))
    for cycle in range(CYCLES):
        workload = Workload(server, "wb:", cycle)
        kill_moment = workload.run_until_killed(rng)
        acked = sum(len(v) for v in workload.acked.values())
        assert acked > 0
        server.start()
        keys, lost = check_write_back(server, workload, kill_moment)
        print(f"cycle {cycle}: {acked} writes acknowledged on {keys} keys, {lost} lost to the crash")


def test_keys_that_expired_while_down_are_gone(start_meridian):
    server = start_meridian(make_config(NAMESPACES))
    client = server.client()
    for i in range(50):
        client.set(f"wt:short:{i}", "v", px=300)
        client.set(f"wt:long:{i}", "v", ex=3600)
        client.set(f"wt:none:{i}", "v")
    client.set("wt:persisted", "v", px=300)
    client.persist("wt:persisted")
    client.set("wt:extended", "v", px=300)
    client.pexpire("wt:extended", 3_600_000)
    server.kill9()
    time.sleep(0.6)
    server.start()
    client = server.client()
    wait_for(lambda: client.info("persistence")["loading"] == 0, timeout=10, what="warm-up")
    assert [client.exists(f"wt:short:{i}") for i in range(50)] == [0] * 50
    assert all(client.get(f"wt:long:{i}") == "v" for i in range(50))
    assert all(0 < client.ttl(f"wt:long:{i}") <= 3600 for i in range(50))
    assert all(client.ttl(f"wt:none:{i}") == -1 for i in range(50))
    assert client.get("wt:persisted") == "v" and client.ttl("wt:persisted") == -1
    assert client.get("wt:extended") == "v" and client.pttl("wt:extended") > 3_000_000
    info = client.info("persistence")
    assert info["loading_expired_records_dropped"] == 50
    assert info["loading_loaded_keys"] == 102


def test_values_and_metadata_round_trip_a_crash(start_meridian):
    server = start_meridian(make_config(NAMESPACES))
    client = server.client(decode=False)
    binary = bytes(range(256)) * 4
    client.set(b"wt:binary", binary)
    client.set(b"wt:empty", b"")
    client.set(b"wt:counter", b"10")
    client.incrby(b"wt:counter", 5)
    client.append(b"wt:appended", b"abc")
    client.setrange(b"wt:appended", 1, b"Z")
    client.set(b"wt:deleted", b"x")
    client.delete(b"wt:deleted")
    client.set(b"wt:renamed-from", b"r")
    client.rename(b"wt:renamed-from", b"wt:renamed-to")
    encoding_before = client.object("encoding", b"wt:appended")
    server.kill9()
    server.start()
    client = server.client(decode=False)
    assert client.get(b"wt:binary") == binary
    assert client.get(b"wt:empty") == b""
    assert client.get(b"wt:counter") == b"15"
    assert client.get(b"wt:appended") == b"aZc"
    assert client.object("encoding", b"wt:appended") == encoding_before
    assert client.exists(b"wt:deleted", b"wt:renamed-from") == 0
    assert client.get(b"wt:renamed-to") == b"r"


def test_flushall_clears_the_disk(start_meridian):
    server = start_meridian(make_config(NAMESPACES))
    client = server.client()
    for i in range(100):
        client.set(f"wt:{i}", "v")
        client.set(f"slow:{i}", "v")
    assert client.flushall() is True
    client.set("wt:after", "kept")
    server.kill9()
    server.start()
    client = server.client()
    wait_for(lambda: client.info("persistence")["loading"] == 0, timeout=10, what="warm-up")
    assert client.dbsize() == 1
    assert client.get("wt:after") == "kept"


def test_save_closes_the_write_back_window(start_meridian):
    server = start_meridian(make_config(NAMESPACES))
    client = server.client()
    client.set("slow:a", "1")  # a 60 s window: only SAVE puts it on disk before the kill
    assert client.info("persistence")["pending_keys"] >= 1
    assert client.save() is True
    assert client.info("persistence")["pending_keys"] == 0
    before = client.lastsave()
    client.set("slow:b", "2")
    assert client.bgsave() in (True, "Background saving started")
    wait_for(lambda: client.info("persistence")["pending_keys"] == 0, timeout=5, what="BGSAVE's flush")
    assert client.lastsave() >= before
    server.kill9()
    server.start()
    client = server.client()
    assert client.get("slow:a") == "1"
    assert client.get("slow:b") == "2"


def test_sigterm_flushes_write_back(start_meridian):
    server = start_meridian(make_config(NAMESPACES))
    client = server.client()
    for i in range(200):
        client.set(f"slow:{i}", str(i))
    assert server.stop() == 0
    server.start()
    client = server.client()
    assert client.mget([f"slow:{i}" for i in range(200)]) == [str(i) for i in range(200)]


def test_info_persistence_reports_the_store(start_meridian):
    server = start_meridian(make_config(NAMESPACES))
    client = server.client()
    client.set("wt:x", "1")
    info = client.info("persistence")
    for field in ("loading", "pending_write_back_bytes", "last_sync_unix_ms", "sync_latency_us",
                  "syncs", "durable_namespaces", "storage_engine", "disk_reads"):
        assert field in info, field
    assert info["storage_engine"] == "rocksdb"
    assert info["syncs"] >= 1
    latency = info["sync_latency_us"]  # redis-py parses Redis's k=v,k=v form into a dict
    assert set(latency) == {"p50", "p99", "p999", "max", "mean"}
    assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
    assert info["durable_namespaces"] == {"wt": "write-through", "wb": "write-back", "slow": "write-back"}


def test_eviction_drops_only_the_memory_copy(start_meridian):
    namespaces = '  - { name: default, prefix: "", durability: write-through, eviction: lru }\n'
    server = start_meridian(make_config(namespaces, maxmemory="1mb"))
    client = server.client()
    value = "x" * 200
    pipe = client.pipeline(transaction=False)
    for i in range(8000):  # about 3.6 MB accounted: most keys must be evicted from memory
        pipe.set(f"key:{i}", f"{i}:{value}")
    pipe.execute()
    stats = client.info("stats")
    assert stats["evicted_keys"] > 0
    # Every key is still readable: misses load from disk.
    for start in range(0, 8000, 500):
        got = client.mget([f"key:{i}" for i in range(start, start + 500)])
        assert got == [f"{i}:{value}" for i in range(start, start + 500)]
    assert client.info("persistence")["disk_reads"] > 0
    # A delete of a key that is only on disk counts it, and it stays deleted.
    assert client.delete("key:0") == 1
    assert client.get("key:0") is None
    # After a restart warm-up stops at the memory limit; the rest still loads on a miss.
    server.kill9()
    server.start()
    client = server.client()
    wait_for(lambda: client.info("persistence")["loading"] == 0, timeout=20, what="warm-up")
    assert client.info("persistence")["loading_stopped_at_maxmemory"] == 1
    assert client.get("key:0") is None
    assert client.get("key:7999") == f"7999:{value}"
    assert client.get("key:1") == f"1:{value}"


def test_memory_namespaces_never_touch_disk(start_meridian):
    namespaces = '  - { name: default, prefix: "", durability: memory, eviction: lru }\n'
    server = start_meridian(make_config(namespaces))
    client = server.client()
    client.set("a", "1")
    assert client.info("persistence")["storage_engine"] == "none"
    assert client.save() is True
    data = server.workdir / "data"
    assert not (data / "store").exists()
    with pytest.raises(redis.ResponseError, match="nothing to save"):
        client.bgsave()


def test_a_data_directory_in_use_is_refused(start_meridian, tmp_path):
    server = start_meridian(make_config(NAMESPACES))
    config = tmp_path / "second.yaml"
    config.write_text(make_config(NAMESPACES).replace("@PORT@", str(free_port())))
    result = subprocess.run(
        [MERIDIAN_SERVER, "--config", str(config), "--port", str(free_port()), "--bind", "127.0.0.1",
         "--data-dir", str(server.workdir / "data")],
        capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "data directory" in output and "lock" in output.lower(), output


def test_reads_during_warm_up_are_correct(start_meridian):
    """A restart with many keys: reads issued while warm-up runs load from disk and agree."""
    namespaces = '  - { name: default, prefix: "", durability: write-through, eviction: none }\n'
    server = start_meridian(make_config(namespaces))
    client = server.client()
    total = 60_000
    pipe = client.pipeline(transaction=False)
    for i in range(total):
        pipe.set(f"k{i}", str(i))
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    server.kill9()
    server.start()
    client = server.client()
    rng = random.Random(7)
    checked = 0
    saw_loading = False
    while checked < 3000:
        saw_loading = saw_loading or client.info("persistence")["loading"] == 1
        sample = [rng.randrange(total) for _ in range(100)]
        assert client.mget([f"k{i}" for i in sample]) == [str(i) for i in sample]
        checked += 100
    wait_for(lambda: client.info("persistence")["loading"] == 0, timeout=30, what="warm-up")
    assert client.dbsize() == total
    print(f"reads overlapped warm-up: {saw_loading}")


def compile_failsync(tmp_path) -> str:
    """Builds the LD_PRELOAD shim with the C compiler that comes with the Swift toolchain."""
    compiler = shutil.which("clang") or shutil.which("cc") or shutil.which("gcc")
    assert compiler, "no C compiler (the Swift toolchain ships clang)"
    library = tmp_path / "libfailsync.so"
    source = os.path.join(os.path.dirname(__file__), "support", "failsync.c")
    subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-o", str(library), source, "-ldl"], check=True)
    return str(library)


def test_a_failed_fsync_stops_the_node_without_acknowledging(start_meridian, tmp_path):
    library = compile_failsync(tmp_path)
    trigger = tmp_path / "fail-now"
    os.environ["LD_PRELOAD"] = library
    os.environ["FAILSYNC_TRIGGER"] = str(trigger)
    try:
        server = start_meridian(make_config(NAMESPACES))
    finally:
        del os.environ["LD_PRELOAD"], os.environ["FAILSYNC_TRIGGER"]
    client = server.client()
    assert client.set("wt:before", "1") is True  # syncs work until the disk "fails"
    trigger.touch()
    with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
        client.set("wt:after", "2")  # never acknowledged: the node exits instead
    wait_for(lambda: not server.alive(), timeout=10, what="the node to stop")
    assert server.proc.returncode == 70
    log = server.log()
    assert "disk write failed" in log and "critical" in log, log[-2000:]
    server.proc = None
    server.stopped = True
    # Restarted on a healthy disk, what was acknowledged is there.
    server.start()
    assert server.client().get("wt:before") == "1"
