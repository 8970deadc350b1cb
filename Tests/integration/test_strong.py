"""Strong namespaces across data centers (docs/CONSISTENCY.md): real processes of the demo
topology (east and west full, central a witness) whose peer links run through the WAN
emulator (`meridian wan-proxy`), each node with its own configuration file whose peer
addresses point at the emulator's links.

What it proves:
* concurrent clients in both data centers doing GET / SET / CAS (IFEQ) / INCR on a few hot
  strong keys, and LOCK, while a full voter (west) and then the witness are killed with SIGKILL
  and restarted, leave a history that `meridian check-history` (the Wing & Gong / Porcupine
  checker) finds linearizable, with lock tokens increasing; writes keep committing in east while
  either voter is down;
* with a majority of voters down a strong command answers `-TRYAGAIN` / `-UNCERTAIN` within the
  configured timeout (never hangs) while eventual keys keep working, and strong keys commit
  again once the voters are back;
* every acknowledged strong write survives SIGKILL of all three nodes (write-through on every
  voter) and reads back from either data center;
* INFO strong reports the engine (voters, leases, commits);
* MULTI / EXEC on strong keys of one partition commit all or nothing, WATCH makes EXEC answer
  nil after another data center wrote a watched key, and the errors (EXECABORT, CROSSSLOT,
  eventual keys, nesting) are Redis's.
"""
from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from conftest import MERIDIAN_SERVER, client_for, free_port, ping_ok, wait_for, wait_for_start

MERIDIAN = str(Path(MERIDIAN_SERVER).with_name("meridian"))

NAMESPACES = (
    "  - { name: default, prefix: \"\", durability: memory }\n"
    "  - { name: config, prefix: \"config:\", consistency: strong, durability: write-through }\n"
)


class StrongCluster:
    """East, west and the central witness; east dials west and central, west dials central
    (the smaller replica dials), so one emulator link per pair carries that pair's link."""

    def __init__(self, tmp: Path, delays_ms: dict[str, int], strong: str = "{ lease: 1s, timeout: 1s }"):
        self.tmp = tmp
        self.ports = {name: free_port() for name in ("east-client", "west-client", "east-peer", "west-peer", "central-peer")}
        links = {"east-west": "west-peer", "east-central": "central-peer", "west-central": "central-peer"}
        args = [MERIDIAN, "wan-proxy"]
        for name, target in links.items():
            args += ["--link", f"{name}=127.0.0.1:0,127.0.0.1:{self.ports[target]},{delays_ms[name]}ms"]
        self.proxy = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.link_ports: dict[str, int] = {}
        for _ in links:
            line = self.proxy.stdout.readline()
            name = line.split()[1]
            self.link_ports[name] = int(line.split(" on ")[1].split()[0].rsplit(":", 1)[1])
        self.control_port = int(self.proxy.stdout.readline().strip().rsplit(":", 1)[1])
        # What each node dials: east reaches west and central through the emulator, west
        # reaches central through it; a node's own peer address is its real listener.
        views = {
            "east-1": {"west": self.link_ports["east-west"], "central": self.link_ports["east-central"]},
            "west-1": {"central": self.link_ports["west-central"]},
            "central-w": {},
        }
        self.configs: dict[str, Path] = {}
        for node, view in views.items():
            def peer(dc: str) -> int:
                return view.get(dc, self.ports[f"{dc}-peer"])
            text = (
                "cluster:\n  name: strongtest\n  partitions: 64\n  datacenters:\n"
                "    - name: east\n      nodes:\n"
                f"        - {{ name: east-1, client: \"127.0.0.1:{self.ports['east-client']}\", peer: \"127.0.0.1:{peer('east')}\" }}\n"
                "    - name: west\n      nodes:\n"
                f"        - {{ name: west-1, client: \"127.0.0.1:{self.ports['west-client']}\", peer: \"127.0.0.1:{peer('west')}\" }}\n"
                "    - name: central\n      witness: true\n      nodes:\n"
                f"        - {{ name: central-w, peer: \"127.0.0.1:{peer('central')}\" }}\n"
                f"strong: {strong}\n"
                "namespaces:\n" + NAMESPACES
            )
            path = tmp / f"{node}.yaml"
            path.write_text(text)
            self.configs[node] = path
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, node: str) -> None:
        log = open(self.tmp / f"{node}.log", "ab")
        self.procs[node] = subprocess.Popen(
            [MERIDIAN_SERVER, "--config", str(self.configs[node]), "--node", node, "--data-dir", str(self.tmp / f"data-{node}")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if node == "central-w":
            wait_for_start(self.procs[node],
                           lambda: self.log(node).count("witness ready") >= self.log(node).count("strong engine started") > 0,
                           lambda: self.log(node), what="the witness")
        else:
            port = self.ports[f"{node.split('-')[0]}-client"]
            wait_for_start(self.procs[node], lambda: ping_ok(port), lambda: self.log(node), what=f"{node} (answering PING)")

    def kill9(self, node: str) -> None:
        self.procs[node].send_signal(signal.SIGKILL)
        self.procs[node].wait(10)

    def log(self, node: str) -> str:
        path = self.tmp / f"{node}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def client(self, dc: str, **kw) -> redis.Redis:
        return client_for(self.ports[f"{dc}-client"], **kw)

    def linked(self) -> bool:
        try:
            for dc, others in (("east", ("west", "central")), ("west", ("east", "central"))):
                info = self.client(dc).info("replication")
                for other in others:
                    if not (isinstance(info.get(f"peer_{other}"), dict) and info[f"peer_{other}"].get("connected") == 1):
                        return False
            return True
        except redis.RedisError:
            return False

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.proxy.terminate()
        self.proxy.wait(10)


@pytest.fixture
def cluster(tmp_path):
    made = StrongCluster(tmp_path, {"east-west": 15, "east-central": 4, "west-central": 5})
    for node in ("central-w", "east-1", "west-1"):
        made.start(node)
    wait_for(made.linked, timeout=20, what="all peer links")
    yield made
    made.stop_all()


def strong_ready(client: redis.Redis, key: str = "config:ready") -> bool:
    try:
        return client.set(key, "1") is True
    except redis.RedisError:
        return False


def strong_read(client: redis.Redis, key: str):
    try:
        return client.get(key)
    except redis.RedisError:
        return None


class Recorder:
    """Runs one client's operations and records what it saw (times from one monotonic clock)."""

    def __init__(self, cluster: StrongCluster, dc: str, seed: int, history: list, lock: threading.Lock, stop: threading.Event):
        self.cluster, self.dc, self.random = cluster, dc, random.Random(seed)
        self.history, self.lock, self.stop = history, lock, stop
        self.successes: list[tuple[float, str]] = []
        self.counts = seed % 2 == 0

    def record(self, entry: dict) -> None:
        with self.lock:
            self.history.append(entry)

    def run(self) -> None:
        client = None
        while not self.stop.is_set():
            if client is None:
                # No client-side retries: a command re-sent after a broken connection is a
                # second command, which the history would record as one.
                client = self.cluster.client(self.dc, socket_timeout=3, retry=Retry(NoBackoff(), 0))
            key = f"config:hot{self.random.randrange(3)}"
            roll = self.random.random()
            entry: dict = {"key": key}
            try:
                if roll < 0.35:
                    entry.update(op="get", invoked=time.monotonic_ns())
                    entry["value"] = client.get(key)
                elif roll < 0.65:
                    entry.update(op="set", value=f"{self.dc}{self.random.randrange(1000)}", invoked=time.monotonic_ns())
                    client.set(key, entry["value"])
                elif roll < 0.85:
                    current = client.get(key)
                    expected = current if current is not None and self.random.random() < 0.7 else f"{self.dc}{self.random.randrange(1000)}"
                    entry.update(op="cas", expected=expected, new=f"{self.dc}{self.random.randrange(1000)}", invoked=time.monotonic_ns())
                    entry["ok"] = client.execute_command("SET", key, entry["new"], "IFEQ", expected) is not None
                elif roll < 0.95 and self.counts:
                    # One client per data center increments the counter (and reads it): with
                    # more, the increments of unknown outcome (while a node is killed) make the
                    # checker's search explode.
                    if self.random.random() < 0.3:
                        entry.update(key="config:counter", op="get", invoked=time.monotonic_ns())
                        entry["value"] = client.get("config:counter")
                    else:
                        entry.update(key="config:counter", op="incr", amount=self.random.randrange(1, 5), invoked=time.monotonic_ns())
                        entry["result"] = client.incrby("config:counter", entry["amount"])
                elif roll < 0.95:
                    entry.update(op="get", invoked=time.monotonic_ns())
                    entry["value"] = client.get(key)
                else:
                    entry.update(key="config:lock", op="lock", invoked=time.monotonic_ns())
                    entry["token"] = client.execute_command("LOCK", "config:lock", "50")
                entry["completed"] = time.monotonic_ns()
                self.successes.append((time.monotonic(), entry["op"]))
            except redis.exceptions.TryAgainError:
                continue  # -TRYAGAIN: certainly not applied, not part of the history
            except redis.ResponseError as error:
                if not str(error).startswith("UNCERTAIN"):
                    raise
                entry["completed"] = None  # it may or may not have been applied
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                entry["completed"] = None
                client = None
                time.sleep(0.05)
            if "invoked" not in entry or (entry["completed"] is None and entry["op"] in ("get", "lock")):
                continue  # a read (or a grant) whose answer never came says nothing
            self.record(entry)


def check_history(tmp: Path, history: list) -> str:
    path = tmp / "history.jsonl"
    with path.open("w") as out:
        for entry in sorted(history, key=lambda e: e["invoked"]):
            out.write(json.dumps(entry) + "\n")
    result = subprocess.run([MERIDIAN, "check-history", str(path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_concurrent_clients_stay_linearizable_while_voters_restart(cluster, tmp_path):
    east, west = cluster.client("east"), cluster.client("west")
    wait_for(lambda: strong_ready(east) and strong_ready(west), timeout=15, what="strong commits")
    history: list = []
    lock = threading.Lock()
    stop = threading.Event()
    recorders = [Recorder(cluster, dc, seed, history, lock, stop) for seed, dc in enumerate(("east", "east", "west", "west"))]
    threads = [threading.Thread(target=r.run, daemon=True) for r in recorders]
    for thread in threads:
        thread.start()
    time.sleep(2)
    # A full voter goes down hard and comes back; then the witness.
    west_down = time.monotonic()
    cluster.kill9("west-1")
    time.sleep(2.5)
    west_up = time.monotonic()
    cluster.start("west-1")
    time.sleep(2)
    witness_down = time.monotonic()
    cluster.kill9("central-w")
    time.sleep(2.5)
    witness_up = time.monotonic()
    cluster.start("central-w")
    time.sleep(2)
    stop.set()
    for thread in threads:
        thread.join(30)
    east_successes = [t for r in recorders if r.dc == "east" for t, op in r.successes if op in ("set", "cas", "incr")]
    # Strong writes kept committing in east while either voter was down (after the lease of a
    # dead leader ran out).
    assert any(west_down + 1.5 < t < west_up for t in east_successes), "no east write committed while west was down"
    assert any(witness_down + 1.5 < t < witness_up for t in east_successes), "no east write committed while the witness was down"
    completed = [e for e in history if e.get("completed") is not None]
    assert len(completed) > 200, len(completed)
    assert {"get", "set", "cas", "incr"} <= {e["op"] for e in completed}
    grants = [e for e in completed if e["op"] == "lock" and e.get("token") is not None]
    assert grants, "no lock was granted"
    summary = check_history(tmp_path, history)
    assert "linearizable:" in summary


def test_a_majority_down_answers_within_the_timeout_and_recovers(cluster):
    east = cluster.client("east", socket_timeout=10)
    wait_for(lambda: strong_ready(east), timeout=15, what="strong commits")
    east.set("config:before", "1")
    cluster.kill9("west-1")
    cluster.kill9("central-w")
    time.sleep(1.2)  # the lease (1 s) runs out
    for attempt in range(3):
        started = time.monotonic()
        with pytest.raises(redis.ResponseError) as raised:
            east.set(f"config:during{attempt}", "x")
        elapsed = time.monotonic() - started
        # redis-py turns -TRYAGAIN into TryAgainError (and drops the prefix).
        assert isinstance(raised.value, redis.exceptions.TryAgainError) or str(raised.value).startswith("UNCERTAIN"), repr(raised.value)
        assert elapsed < 1.0 + 0.5, elapsed  # the configured timeout, plus scheduling
    # Eventual keys do not care.
    started = time.monotonic()
    assert east.set("plain", "v") is True
    assert east.get("plain") == "v"
    assert time.monotonic() - started < 0.5
    cluster.start("central-w")
    # Commands may still time out while the links come back (reconnect backoff) and the
    # restarted witness sits out one lease before it promises anything (docs/CONSISTENCY.md,
    # "Recovery"); then east and the witness are a majority again.
    wait_for(lambda: strong_ready(east, "config:after"), timeout=15, what="strong commits with east and the witness")
    wait_for(lambda: strong_read(east, "config:before") == "1", timeout=15, what="the write from before the outage")
    cluster.start("west-1")
    west = cluster.client("west")
    wait_for(lambda: strong_read(west, "config:after") == "1", timeout=15, what="west reading the write made without it")


def test_acknowledged_strong_writes_survive_sigkill_of_every_node(cluster):
    east, west = cluster.client("east"), cluster.client("west")
    wait_for(lambda: strong_ready(east) and strong_ready(west), timeout=15, what="strong commits")
    written = {}
    for n in range(60):
        client = east if n % 2 == 0 else west
        key = f"config:k{n}"
        assert client.set(key, f"v{n}") is True
        written[key] = f"v{n}"
    assert east.incrby("config:n", 5) == 5
    token = int(east.execute_command("LOCK", "config:deploy", "60000"))
    for node in ("east-1", "west-1", "central-w"):
        cluster.kill9(node)
    for node in ("central-w", "east-1", "west-1"):
        cluster.start(node)
    wait_for(cluster.linked, timeout=20, what="all peer links")
    east, west = cluster.client("east", socket_timeout=10), cluster.client("west", socket_timeout=10)
    wait_for(lambda: strong_ready(east), timeout=20, what="strong commits after the restart")
    for client in (east, west):
        assert {key: client.get(key) for key in written} == written
        assert client.get("config:n") == "5"
    # The lock survived too: it is still held, and a fenced write with its token applies.
    assert east.execute_command("LOCK", "config:deploy", "1000") is None
    assert west.execute_command("SET", "config:deploy", "go", "FENCE", token) is True
    assert east.execute_command("UNLOCK", "config:deploy", token) == 1
    newer = int(east.execute_command("LOCK", "config:deploy", "1000"))
    assert newer > token
    with pytest.raises(redis.ResponseError, match="stale fencing token"):
        west.execute_command("SET", "config:deploy", "late", "FENCE", token)
    assert west.get("config:deploy") == "go"


def test_info_strong_reports_the_engine(cluster):
    east = cluster.client("east")
    wait_for(lambda: strong_ready(east), timeout=15, what="strong commits")
    for n in range(10):
        east.set(f"config:i{n}", n)
    # The engine publishes its counters every 100 ms.
    wait_for(lambda: east.info("strong")["strong_replies"] >= 10, timeout=5, what="INFO strong catching up")
    info = east.info("strong")
    assert info["strong_enabled"] == 1
    assert info["strong_voters"] == ["east-1", "west-1", "central-w"]  # redis-py splits on commas
    assert info["strong_replies"] >= 10 and info["strong_entries_applied"] >= 10
    assert info["strong_synced_batches"] > 0
    wait_for(lambda: east.info("strong")["strong_leases_held"] >= 1, timeout=5, what="east holding a lease")


def test_multi_exec_and_watch_on_strong_keys(cluster):
    east = cluster.client("east", single_connection_client=True)
    west = cluster.client("west", single_connection_client=True)
    wait_for(lambda: strong_ready(east) and strong_ready(west), timeout=15, what="strong commits")
    # A transaction on keys sharing a hash tag: one Paxos entry, all or nothing.
    pipe = east.pipeline(transaction=True)
    pipe.set("config:{acct}:a", "10").incrby("config:{acct}:b", 5).get("config:{acct}:a").getdel("config:{acct}:a")
    assert pipe.execute() == [True, 5, "10", "10"]
    assert west.get("config:{acct}:b") == "5" and west.get("config:{acct}:a") is None
    # WATCH: a write by another data center between WATCH and EXEC makes EXEC answer nil.
    west.set("config:{acct}:a", "1")
    west.execute_command("WATCH", "config:{acct}:a")
    east.set("config:{acct}:a", "2")
    assert west.execute_command("MULTI") == "OK"
    west.execute_command("SET", "config:{acct}:a", "3")  # +QUEUED (redis-py maps it to False)
    assert west.execute_command("EXEC") is None
    assert east.get("config:{acct}:a") == "2"
    # Without interference it commits; the watch is gone after EXEC.
    with west.pipeline(transaction=True) as pipe:
        pipe.watch("config:{acct}:a")
        current = int(pipe.get("config:{acct}:a"))
        pipe.multi()
        pipe.set("config:{acct}:a", current + 1)
        assert pipe.execute() == [True]
    assert east.get("config:{acct}:a") == "3"
    # A failing command rolls the whole transaction back.
    east.set("config:{acct}:s", "text")
    east.execute_command("MULTI")
    east.execute_command("SET", "config:{acct}:a", "99")
    east.execute_command("INCR", "config:{acct}:s")
    with pytest.raises(redis.exceptions.ExecAbortError, match="rolled back: ERR value is not an integer"):
        east.execute_command("EXEC")
    assert east.get("config:{acct}:a") == "3"
    # Clear errors.
    with pytest.raises(redis.ResponseError, match="EXEC without MULTI"):
        east.execute_command("EXEC")
    with pytest.raises(redis.ResponseError, match="DISCARD without MULTI"):
        east.execute_command("DISCARD")
    with pytest.raises(redis.ResponseError, match="strong keys only"):
        east.execute_command("WATCH", "plain")
    with pytest.raises(redis.ResponseError, match="mixes strong and eventual"):
        east.execute_command("WATCH", "config:{acct}:a", "plain")
    with pytest.raises(redis.exceptions.ClusterCrossSlotError):
        east.execute_command("WATCH", "config:{acct}:a", "config:{other}:a")
    east.execute_command("MULTI")
    with pytest.raises(redis.ResponseError, match="nested"):
        east.execute_command("MULTI")
    with pytest.raises(redis.ResponseError, match="cannot be queued"):
        east.execute_command("SET", "plain", "1")
    with pytest.raises(redis.ResponseError, match="inside MULTI"):
        east.execute_command("WATCH", "config:{acct}:a")
    with pytest.raises(redis.exceptions.ExecAbortError, match="previous errors"):
        east.execute_command("EXEC")
    assert east.get("plain") is None
    east.execute_command("MULTI")
    east.execute_command("SET", "config:{acct}:a", "1")
    east.execute_command("SET", "config:{other}:a", "1")
    with pytest.raises(redis.exceptions.ClusterCrossSlotError):
        east.execute_command("EXEC")
    # A mistyped command inside MULTI makes EXEC abort, as in Redis: nothing is applied.
    east.execute_command("MULTI")
    east.execute_command("SET", "config:{acct}:a", "5")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        east.execute_command("INCRBY", "config:{acct}:a")
    with pytest.raises(redis.ResponseError, match="unknown command"):
        east.execute_command("NOSUCHCOMMAND", "config:{acct}:a")
    with pytest.raises(redis.exceptions.ExecAbortError, match="previous errors"):
        east.execute_command("EXEC")
    assert east.get("config:{acct}:a") == "3"
    east.execute_command("MULTI")
    east.execute_command("SET", "config:{acct}:a", "1")
    assert east.execute_command("DISCARD") == "OK"
    assert east.get("config:{acct}:a") == "3"
