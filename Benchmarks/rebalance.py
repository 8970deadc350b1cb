#!/usr/bin/env python3
"""A node joining a loaded data center (docs/PERFORMANCE.md, "Rebalancing: a node joins a
loaded data center"): three `meridian-server` processes with three replicas of every partition
(1,024 partitions, write-back) hold `--keys` keys; a fourth, listed as a spare, is started and
added with `meridian cluster add-node` while a client load runs. redis-server runs side by side
as the reference for the client's own latency.

It reports:
1. the load: keys written through the three nodes (pipelined), seconds and keys/s;
2. the join: seconds from `add-node` to the end of the change (every moving partition switched),
   the records streamed to the new node (INFO `cluster_move_entries_received`), its keys after
   (DBSIZE), and the CPU seconds the four nodes spent during it (from /proc);
3. the clients during the join: a closed loop of GETs of loaded keys and SETs of fresh keys
   (one thread per node of the three), before / during / after the join — operations, errors,
   p50 and p99 latency — beside the same loop against redis-server (ratio of p99s);
4. a check: a sample of the loaded keys read through the new node equals what was written.

Usage: Benchmarks/rebalance.py [--keys N] [--value-bytes N] [--steady-seconds S]
Needs a release build (`scripts/build-release`) or MERIDIAN_SERVER / MERIDIAN; redis-server;
python3 with redis (the test command installs it).
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
SERVER = os.environ.get("MERIDIAN_SERVER", str(ROOT / ".build/release/meridian-server"))
CLI = os.environ.get("MERIDIAN", str(Path(SERVER).with_name("meridian")))
MEMBERS = ("e1", "e2", "e3")
SPARE = "e4"
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_ping(port: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if redis.Redis(port=port, socket_timeout=1).ping():
                return
        except redis.RedisError:
            time.sleep(0.05)
    raise SystemExit(f"nothing answers PING on port {port}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Load:
    """A closed loop per target: GET a loaded key, SET a fresh one, alternately; each
    operation's end time, latency and outcome are kept."""

    def __init__(self, ports: list[int], keys: int, value: str):
        self.ports = ports
        self.keys = keys
        self.value = value
        self.stop = threading.Event()
        self.samples: list[tuple[float, float, bool]] = []  # (end, latency ms, ok)
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(index, port)) for index, port in enumerate(ports)]

    def run(self, index: int, port: int) -> None:
        client = redis.Redis(port=port, socket_timeout=30, decode_responses=True)
        generator = random.Random(index)
        local: list[tuple[float, float, bool]] = []
        sequence = 0
        while not self.stop.is_set():
            started = time.monotonic()
            ok = True
            try:
                if sequence % 2 == 0:
                    key = f"key:{generator.randrange(self.keys)}"
                    if client.get(key) != self.value:
                        ok = False
                        with self.lock:
                            self.errors.append(f"{key}: wrong value")
                else:
                    client.set(f"fresh:{index}:{sequence}", self.value)
            except redis.RedisError as error:
                ok = False
                with self.lock:
                    self.errors.append(str(error))
            ended = time.monotonic()
            local.append((ended, (ended - started) * 1000, ok))
            sequence += 1
        with self.lock:
            self.samples.extend(local)

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def phase(self, start: float, end: float) -> str:
        chosen = [sample for sample in self.samples if start <= sample[0] < end]
        latencies = [sample[1] for sample in chosen]
        failed = sum(1 for sample in chosen if not sample[2])
        seconds = max(end - start, 1e-9)
        return (f"{len(chosen):7d} ops {len(chosen) / seconds:8.0f} ops/s  errors {failed:4d}  "
                f"p50 {percentile(latencies, 0.5):6.2f} ms  p99 {percentile(latencies, 0.99):7.2f} ms"), percentile(latencies, 0.99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--steady-seconds", type=float, default=5)
    options = parser.parse_args()
    for needed in (SERVER, CLI):
        if not os.access(needed, os.X_OK):
            raise SystemExit(f"no executable at {needed}: run scripts/build-release first (or set MERIDIAN_SERVER / MERIDIAN)")
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is needed (apt-get install redis-server)")

    work = Path(tempfile.mkdtemp(prefix="meridian-rebalance."))
    processes: dict[str, subprocess.Popen] = {}
    ports = {f"{node}-{kind}": free_port() for node in MEMBERS + (SPARE,) for kind in ("client", "peer")}
    config = work / "dc.yaml"
    nodes = "".join(
        f"        - {{ name: {node}, client: \"127.0.0.1:{ports[node + '-client']}\", peer: \"127.0.0.1:{ports[node + '-peer']}\""
        f"{', spare: true' if node == SPARE else ''} }}\n" for node in MEMBERS + (SPARE,))
    config.write_text(
        "cluster:\n  name: bench\n  partitions: 1024\n  replication_factor: 3\n  datacenters:\n    - name: east\n      nodes:\n"
        + nodes + "namespaces:\n  - { name: default, prefix: \"\", durability: write-back, eviction: none }\n")

    def start(node: str) -> None:
        log = open(work / f"{node}.log", "ab")
        processes[node] = subprocess.Popen(
            [SERVER, "--config", str(config), "--node", node, "--data-dir", str(work / f"data-{node}")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_ping(ports[f"{node}-client"])

    redis_port = free_port()
    processes["redis"] = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for node in MEMBERS:
            start(node)
        first = redis.Redis(port=ports["e1-client"], decode_responses=True)
        deadline = time.monotonic() + 60
        while first.info("cluster")["cluster_members_alive"] != 3 or any(
                redis.Redis(port=ports[f"{node}-client"]).info("cluster")["cluster_partitions_rebuilding"] for node in MEMBERS):
            if time.monotonic() > deadline:
                raise SystemExit("the three nodes did not settle")
            time.sleep(0.2)
        value = "v" * options.value_bytes

        # 1. The load, pipelined through the three nodes at once, eight connections each (a
        # connection runs its forwarded commands one at a time: pipelining alone overlaps nothing).
        connections = 24

        def load(index: int) -> None:
            client = redis.Redis(port=ports[f"{MEMBERS[index % 3]}-client"], socket_timeout=120)
            for start_key in range(index * 500, options.keys, connections * 500):
                pipe = client.pipeline(transaction=False)
                for key in range(start_key, min(start_key + 500, options.keys)):
                    pipe.set(f"key:{key}", value)
                assert all(pipe.execute())
        began = time.monotonic()
        loaders = [threading.Thread(target=load, args=(index,)) for index in range(connections)]
        for thread in loaders:
            thread.start()
        for thread in loaders:
            thread.join()
        loaded = time.monotonic() - began
        print(f"loaded {options.keys} keys of {options.value_bytes} bytes through 3 nodes in {loaded:.1f} s ({options.keys / loaded:.0f} keys/s)")

        # Reference: the same client loop against redis-server.
        reference = redis.Redis(port=redis_port)
        pipe = reference.pipeline(transaction=False)
        for key in range(min(options.keys, 100_000)):
            pipe.set(f"key:{key}", value)
        pipe.execute()
        baseline = Load([redis_port] * 3, min(options.keys, 100_000), value)
        baseline_start = time.monotonic()
        baseline.start()
        time.sleep(options.steady_seconds)
        baseline_end = time.monotonic()
        baseline.finish()
        reference_line, reference_p99 = baseline.phase(baseline_start, baseline_end)
        print(f"redis-server, same client loop:  {reference_line}")

        # 2 and 3. The join under load.
        start(SPARE)
        clients = [ports[f"{node}-client"] for node in MEMBERS]
        load_run = Load(clients, options.keys, value)
        load_run.start()
        time.sleep(options.steady_seconds)
        cpu_before = {node: cpu_seconds(processes[node].pid) for node in MEMBERS + (SPARE,)}
        join_start = time.monotonic()
        change = subprocess.run([CLI, "cluster", "add-node", SPARE, "--config", str(config), "--timeout", "3600"],
                                capture_output=True, text=True)
        join_end = time.monotonic()
        cpu_during = sum(cpu_seconds(processes[node].pid) - cpu_before[node] for node in MEMBERS + (SPARE,))
        time.sleep(options.steady_seconds)
        load_run.finish()
        if change.returncode != 0:
            raise SystemExit(f"add-node failed:\n{change.stdout}{change.stderr}")
        spare = redis.Redis(port=ports[f"{SPARE}-client"], decode_responses=True)
        info = spare.info("cluster")
        print(f"join: {join_end - join_start:.1f} s from add-node to the end of the change; "
              f"{info['cluster_move_entries_received']} records streamed to the new node, which holds {spare.dbsize()} keys; "
              f"CPU of the four nodes during it {cpu_during:.1f} s")
        for name, (start_at, end_at) in {
            "before": (join_start - options.steady_seconds, join_start),
            "during": (join_start, join_end),
            "after": (join_end, join_end + options.steady_seconds),
        }.items():
            line, p99 = load_run.phase(start_at, end_at)
            print(f"clients {name:6s} the join: {line}  (p99 {p99 / reference_p99:.1f}x redis-server's)")
        if load_run.errors:
            print(f"client errors ({len(load_run.errors)}), first ones: {load_run.errors[:5]}")

        # 4. The check.
        sample = random.Random(7).sample(range(options.keys), min(options.keys, 10_000))
        names = [f"key:{key}" for key in sample]
        values = []
        for offset in range(0, len(names), 500):
            values += spare.mget(names[offset:offset + 500])
        wrong = sum(1 for got in values if got != value)
        print(f"check: {len(names) - wrong} of {len(names)} sampled keys read back through the new node")
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        for log in sorted(work.glob("*.log")):
            bad = [line for line in log.read_text(errors="replace").splitlines() if any(word in line for word in ("error", "critical", "crashed"))]
            if bad:
                print(f"== {log.name}:", *bad[:5], sep="\n")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
