"""Scale-out inside a data center (docs/CLUSTER.md): real processes of one data center of three
nodes with three replicas of every partition, on loopback ports chosen here.

What it proves: any node serves any key (commands on a key run on its partition's primary,
forwarded there by the other nodes); counters count every node's increments; a command whose
keys span partitions is split by partition, or refused with CROSSSLOT when it cannot be; every node's replica of every partition has the
same Merkle root (CLUSTER DIGEST). Multi-key commands across partitions (MGET, MSET, DEL,
EXISTS, TOUCH) are split by partition and reassembled; RENAME and MSETNX across partitions are
refused. Under a write load through all three nodes, a node killed
with SIGKILL costs at most the commands in flight to it at that moment (answered "may have been
applied", never silently lost); writes keep succeeding through the other two; every
acknowledged write is readable through every node; and once the node restarts, the hints the
others kept for it are replayed (and, for a namespace that keeps nothing on disk, its
partitions rebuilt from the others) until all three replicas are identical again.
"""
from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis

from conftest import MERIDIAN_SERVER, client_for, free_port, ping_ok, wait_for, wait_for_start

PARTITIONS = 64
NODES = ("e1", "e2", "e3")
MEMORY = "  - { name: default, prefix: \"\", durability: memory }\n"
DURABLE = "  - { name: default, prefix: \"\", durability: write-back, write_back_window: 10ms }\n"


class DataCenter:
    """The nodes of one data center (three unless said), each with its client and peer port;
    `spares` are listed too, as spares (members only once added). `west` names the nodes of a
    second full data center (none unless said), which the deltas of the first reach and which
    sends its own."""

    def __init__(self, tmp_path: Path, namespaces: str = MEMORY, replication_factor: int = 3, settings: str = "",
                 members: tuple[str, ...] = NODES, spares: tuple[str, ...] = (), west: tuple[str, ...] = ()):
        self.tmp = tmp_path
        self.members = members
        self.west = west
        everyone = members + spares + west
        self.ports: dict[str, int] = {}
        for name in (f"{node}-{kind}" for node in everyone for kind in ("client", "peer")):
            port = free_port()
            while port in self.ports.values():  # a port handed out twice would be refused
                port = free_port()
            self.ports[name] = port
        def listed(names):
            return "".join(
                f"        - {{ name: {node}, client: \"127.0.0.1:{self.ports[node + '-client']}\", "
                f"peer: \"127.0.0.1:{self.ports[node + '-peer']}\"{', spare: true' if node in spares else ''} }}\n"
                for node in names)
        nodes = listed(members + spares)
        if west:
            nodes += "    - name: west\n      nodes:\n" + listed(west)
        self.config = tmp_path / "dc.yaml"
        self.config.write_text(
            "cluster:\n  name: scale\n"
            f"  partitions: {PARTITIONS}\n  replication_factor: {replication_factor}\n" + settings +
            "  datacenters:\n    - name: east\n      nodes:\n" + nodes + "namespaces:\n" + namespaces)
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, node: str) -> None:
        log = open(self.tmp / f"{node}.log", "ab")
        proc = subprocess.Popen(
            [MERIDIAN_SERVER, "--config", str(self.config), "--node", node, "--data-dir", str(self.tmp / f"data-{node}")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs[node] = proc
        port = self.ports[f"{node}-client"]
        wait_for_start(proc, lambda: ping_ok(port), lambda: self.log(node), what=f"{node} (answering PING)")

    def start_all(self, wait_for_rebuilds: bool = True) -> None:
        for node in self.members + self.west:
            self.start(node)
        # A second data center of one node runs no cluster core.
        groups = (self.members, self.west) if len(self.west) > 1 else (self.members,)
        wait_for(lambda: all(self.info(node)["cluster_members_alive"] == len(group) for group in groups for node in group),
                 timeout=20, what="every member alive at every member")
        # A new data directory counts as lost data: each node first rebuilds its partitions
        # from the others (empty here), then marks its directory as holding them.
        if wait_for_rebuilds:
            wait_for(lambda: all(self.info(node)["cluster_partitions_rebuilding"] == 0 for group in groups for node in group),
                     timeout=20, what="the first rebuilds")

    def kill9(self, node: str) -> None:
        self.procs[node].send_signal(signal.SIGKILL)
        self.procs[node].wait(10)

    def stop(self, node: str) -> int:
        self.procs[node].send_signal(signal.SIGTERM)
        return self.procs[node].wait(10)

    def log(self, node: str) -> str:
        return (self.tmp / f"{node}.log").read_text(errors="replace")

    def client(self, node: str, **kw) -> redis.Redis:
        return client_for(self.ports[f"{node}-client"], **kw)

    def info(self, node: str) -> dict:
        return self.client(node).info("cluster")

    def digests(self, node: str) -> list:
        client = self.client(node)
        return [client.execute_command("CLUSTER", "DIGEST", partition) for partition in range(PARTITIONS)]

    def stop_all(self) -> dict[str, int | None]:
        codes = {}
        for node, proc in self.procs.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                codes[node] = proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[node] = None
        return codes


@pytest.fixture
def datacenter(tmp_path):
    made = DataCenter(tmp_path)
    yield made
    codes = made.stop_all()
    assert all(code == 0 for node, code in codes.items() if made.procs[node].returncode != -signal.SIGKILL), codes


def replicas_identical(dc: DataCenter) -> bool:
    first = dc.digests(NODES[0])
    return all(dc.digests(node) == first for node in NODES[1:]) and any(digest is not None for digest in first)


def test_any_node_serves_every_key(datacenter):
    dc = datacenter
    dc.start_all()
    clients = [dc.client(node) for node in NODES]
    for index in range(90):
        assert clients[index % 3].set(f"k{index}", f"v{index}") is True
    for index in range(90):
        assert clients[(index + 1) % 3].get(f"k{index}") == f"v{index}", index
    for round_ in range(10):
        for client in clients:
            client.incr("hits")
    assert all(client.get("hits") == "30" for client in clients)
    clients[0].set("doomed", "x", ex=1000)
    assert 990 < clients[1].ttl("doomed") <= 1000
    assert clients[2].delete("doomed") == 1
    assert clients[1].get("doomed") is None and clients[0].exists("doomed") == 0
    # Keys that share a hash tag share a partition: multi-key commands on them run whole.
    assert clients[1].mset({"{user1}:name": "ada", "{user1}:mail": "ada@example.com"}) is True
    assert clients[2].mget(["{user1}:name", "{user1}:mail"]) == ["ada", "ada@example.com"]
    # Keys of several partitions: split by partition, run on each primary, reassembled in
    # argument order (atomic per partition only).
    keys = [f"k{index}" for index in range(30)] + ["missing"]
    assert clients[0].mget(keys) == [f"v{index}" for index in range(30)] + [None]
    assert dc.client("e2", protocol=3).mget(keys[:5] + ["missing"]) == [f"v{index}" for index in range(5)] + [None]
    assert clients[1].mset({f"m{index}": f"w{index}" for index in range(20)}) is True
    assert clients[2].mget([f"m{index}" for index in range(20)]) == [f"w{index}" for index in range(20)]
    assert clients[2].exists(*[f"m{index}" for index in range(20)], "missing") == 20
    assert clients[0].touch(*[f"m{index}" for index in range(10)]) == 10
    assert clients[0].delete(*[f"m{index}" for index in range(20)], "missing") == 20
    assert clients[1].exists(*[f"m{index}" for index in range(20)]) == 0
    # What needs every key at once is not split.
    with pytest.raises(redis.ResponseError, match="hash to the same slot"):
        clients[0].rename("k1", "k2")
    with pytest.raises(redis.ResponseError, match="hash to the same slot"):
        clients[0].msetnx({"n1": "a", "n2": "b", "n3": "c", "n4": "d"})
    info = dc.info("e1")
    assert info["cluster_members"] == 3 and info["cluster_placement_epoch"] == 1
    assert sum(dc.info(node)["cluster_commands_forwarded"] for node in NODES) > 0
    assert sum(dc.info(node)["cluster_forwarded_commands_run"] for node in NODES) > 0
    wait_for(lambda: replicas_identical(dc), timeout=10, what="identical replicas on all three nodes")
    # A flush of one node's replicas is refused rather than undone by anti-entropy.
    with pytest.raises(redis.ResponseError, match="not supported in a data center of several nodes"):
        clients[0].flushall()


def write_load(dc: DataCenter, nodes: tuple[str, ...], stop: threading.Event, acknowledged: dict, errors: list, prefix: str):
    """One thread per node: SETs of fresh keys until `stop`; records what was acknowledged."""
    def run(node: str):
        client = dc.client(node, socket_timeout=10)
        index = 0
        while not stop.is_set():
            key = f"{prefix}{node}-{index}"
            value = f"value-{index}"
            try:
                if client.set(key, value):
                    acknowledged[key] = value
            except redis.ResponseError as error:
                errors.append((node, key, str(error)))
            except redis.ConnectionError:
                return  # this node was killed
            index += 1
    threads = [threading.Thread(target=run, args=(node,)) for node in nodes]
    for thread in threads:
        thread.start()
    return threads


@pytest.mark.parametrize("namespaces", [MEMORY, DURABLE], ids=["memory", "write-back"])
def test_a_killed_node_costs_no_acknowledged_write_and_catches_up(tmp_path, namespaces):
    # Anti-entropy every 2 s: a write the killed node had sent to one replica only (its
    # coordinator, and with it the hint for the other, died) is repaired between the two.
    dc = DataCenter(tmp_path, namespaces=namespaces, settings="  anti_entropy_interval: 2s\n")
    try:
        dc.start_all()
        stop = threading.Event()
        acknowledged: dict[str, str] = {}
        errors: list = []
        threads = write_load(dc, ("e1", "e3"), stop, acknowledged, errors, "a:")
        victim_threads = write_load(dc, ("e2",), stop, acknowledged, errors, "b:")
        time.sleep(1.5)
        dc.kill9("e2")
        for thread in victim_threads:
            thread.join(10)
        before = len(acknowledged)
        time.sleep(3)
        assert len(acknowledged) > before + 100, "writes keep succeeding through the two live nodes"
        stop.set()
        for thread in threads:
            thread.join(10)
        # Only commands in flight to the killed node when it died may fail, and they say so.
        assert len(errors) <= 2, errors
        assert all("may have been applied" in message for _, _, message in errors), errors
        held = dc.info("e1")["cluster_hints_held"] + dc.info("e3")["cluster_hints_held"]
        assert held > 0, "writes the killed node missed are kept as hints"
        for node in ("e1", "e3"):
            client = dc.client(node)
            sample = list(acknowledged.items())[::7]
            assert client.mget([key for key, _ in sample[:1]]) == [sample[0][1]]
            for key, value in sample:
                assert client.get(key) == value, (node, key)
        dc.start("e2")
        wait_for(lambda: dc.info("e1")["cluster_hints_held"] == 0 and dc.info("e3")["cluster_hints_held"] == 0,
                 timeout=30, what="hints replayed to the restarted node")
        assert dc.info("e1")["cluster_hints_replayed"] + dc.info("e3")["cluster_hints_replayed"] > 0
        wait_for(lambda: replicas_identical(dc), timeout=30, what="identical replicas after the restart")
        # Memory kept nothing across the crash: every partition was rebuilt from the other
        # owners. The disk kept its records: nothing needed rebuilding.
        rebuilt = dc.info("e2")["cluster_partitions_rebuilt"]
        assert rebuilt == (PARTITIONS if namespaces == MEMORY else 0), rebuilt
        restarted = dc.client("e2")
        for key, value in list(acknowledged.items())[::5]:
            assert restarted.get(key) == value, key
        assert restarted.dbsize() >= len(acknowledged), "the restarted node's replica holds every acknowledged key"
    finally:
        codes = dc.stop_all()
    assert codes["e1"] == 0 and codes["e3"] == 0 and codes["e2"] == 0, codes


def primary_keys(dc: DataCenter, node: str, prefix: str, count: int) -> list[str]:
    """Keys whose partition lists `node` first (its primary while it is alive)."""
    client = dc.client(node)
    port = dc.ports[f"{node}-client"]
    ranges = [(low, high, owners[0][1]) for low, high, *owners in client.execute_command("CLUSTER", "SLOTS")]
    keys = []
    index = 0
    while len(keys) < count:
        key = f"{prefix}{index}"
        slot = client.execute_command("CLUSTER", "KEYSLOT", key)
        if any(low <= slot <= high and first == port for low, high, first in ranges):
            keys.append(key)
        index += 1
    return keys


def test_a_stale_primary_reads_a_quorum_before_it_computes(tmp_path):
    """A primary back from a crash with its disk but without the writes it missed (their hints
    died with the node that kept them) appends to the owners' newest value, not its own stale
    one, when the namespace reads a quorum first (`read_acks: quorum`)."""
    namespaces = (
        "  - { name: default, prefix: \"\", durability: write-back, write_back_window: 10ms }\n"
        "  - { name: careful, prefix: \"q:\", durability: write-back, write_back_window: 10ms, read_acks: quorum }\n"
    )
    dc = DataCenter(tmp_path, namespaces=namespaces)
    try:
        dc.start_all()
        keys = primary_keys(dc, "e2", "q:", 5)
        late = primary_keys(dc, "e2", "q:late:", 1)[0]
        e1, e3 = dc.client("e1"), dc.client("e3")
        for key in keys:
            assert e1.set(key, "a") is True
        time.sleep(0.2)  # on e2's disk
        dc.kill9("e2")
        # (A command sent while the link still looked up would fail as "may have been applied".)
        wait_for(lambda: dc.info("e1")["cluster_members_alive"] == 2, timeout=20, what="e1 sees e2 down")
        for key in keys:
            assert e1.append(key, "c") == 2  # e1 and e3 hold "ac"; e1 keeps the hints for e2
        assert e1.set(late, "x") is True  # a key written only while e2 was down
        assert dc.procs["e1"].send_signal(signal.SIGTERM) is None
        assert dc.procs["e1"].wait(10) == 0  # and its hints go with it
        dc.start("e2")
        wait_for(lambda: dc.info("e2")["cluster_members_alive"] >= 2, timeout=20, what="e2 and e3 linked")
        e2 = dc.client("e2")
        for key in keys:
            assert e2.append(key, "b") == 3, key
            assert e2.get(key) == "acb"
            assert e3.get(key) == "acb"
        # A key e2 never saw: its DEL reads the owners first, so it deletes what they hold.
        assert e2.delete(late) == 1
        assert e3.get(late) is None
    finally:
        codes = dc.stop_all()
    assert all(code == 0 for code in codes.values()), codes


def test_object_help_and_other_keyless_forms_run_here(datacenter):
    dc = datacenter
    dc.start_all()
    client = dc.client("e1")
    assert any("OBJECT" in line for line in client.execute_command("OBJECT", "HELP"))
    assert client.ping() is True


def test_fewer_replicas_than_nodes_keep_their_disk_across_a_restart(tmp_path):
    """With two replicas of each partition on three nodes, a node that restarts with its disk
    does not count as having lost its data (it marked its directory once it held every
    partition it owns) and rebuilds nothing."""
    dc = DataCenter(tmp_path, namespaces=DURABLE, replication_factor=2)
    try:
        dc.start_all()
        client = dc.client("e1")
        for index in range(60):
            assert client.set(f"k{index}", f"v{index}") is True
        time.sleep(0.2)
        dc.kill9("e2")
        dc.start("e2")
        assert dc.info("e2")["cluster_partitions_rebuilding"] == 0, "its disk holds what it owns"
        wait_for(lambda: dc.info("e2")["cluster_members_alive"] == 3, timeout=20, what="e2 back")
        assert dc.info("e2")["cluster_partitions_rebuilt"] == 0
        for index in range(60):
            assert dc.client("e2").get(f"k{index}") == f"v{index}"
    finally:
        codes = dc.stop_all()
    assert all(code == 0 for code in codes.values()), codes


def test_a_rebuilding_node_passes_commands_on(tmp_path):
    """A node back with an empty memory namespace rebuilds its partitions; meanwhile commands
    for them, forwarded to it by nodes that see it alive, go on to the next owner."""
    dc = DataCenter(tmp_path, namespaces=MEMORY)
    try:
        dc.start_all()
        keys = primary_keys(dc, "e2", "r:", 10)
        e1 = dc.client("e1")
        for key in keys:
            assert e1.set(key, "kept") is True
        dc.kill9("e2")
        wait_for(lambda: dc.info("e1")["cluster_members_alive"] == 2, timeout=20, what="e1 sees e2 down")
        dc.start("e2")
        wait_for(lambda: dc.info("e1")["cluster_members_alive"] == 3, timeout=20, what="e1 sees e2 back")
        assert dc.info("e2")["cluster_partitions_rebuilding"] > 0, "still rebuilding (streams wait out a request timeout)"
        # e1 and e3 route to e2 once they hear from it directly (until then they skip it):
        # read through both until e2 has passed reads on, while it still rebuilds.
        e3 = dc.client("e3")
        deadline = time.monotonic() + 10
        while dc.info("e2")["cluster_commands_forwarded"] == 0 and time.monotonic() < deadline:
            for key in keys:
                assert e1.get(key) == "kept", key
                assert e3.get(key) == "kept", key
        assert dc.info("e2")["cluster_commands_forwarded"] > 0, "e2 passed commands on"
        print("rebuilding after the reads:", dc.info("e2")["cluster_partitions_rebuilding"])
        wait_for(lambda: dc.info("e2")["cluster_partitions_rebuilding"] == 0, timeout=30, what="the rebuild")
        for key in keys:
            assert dc.client("e2").get(key) == "kept"
    finally:
        codes = dc.stop_all()
    assert all(code == 0 for code in codes.values()), codes


def test_a_new_data_center_never_circles_commands_while_its_nodes_rebuild(tmp_path):
    """Every node of a new data center starts by rebuilding its partitions (a new data directory
    may be a wiped one). A command forwarded to a rebuilding primary is passed on once; an owner
    that rebuilds the partition too answers TRYAGAIN (nothing ran) instead of passing it back, so
    no command waits for its deadline; once the rebuilds end, everything runs. (A 6 s request
    timeout keeps the nodes rebuilding — their streams wait it out — while the commands run.)"""
    dc = DataCenter(tmp_path, settings="  request_timeout: 6s\n")
    try:
        new_data_center_commands(dc)
    finally:
        codes = dc.stop_all()
    assert all(code == 0 for code in codes.values()), codes


def new_data_center_commands(dc: DataCenter) -> None:
    dc.start_all(wait_for_rebuilds=False)
    assert all(dc.info(node)["cluster_partitions_rebuilding"] > 0 for node in NODES), "still rebuilding"
    clients = [dc.client(node) for node in NODES]
    answered = {"ok": 0, "tryagain": 0}
    for index in range(30):
        started = time.monotonic()
        try:
            assert clients[index % 3].set(f"early{index}", f"v{index}") is True
            answered["ok"] += 1
        except redis.ResponseError as error:
            assert "replicas are being rebuilt" in str(error), error
            answered["tryagain"] += 1
        assert time.monotonic() - started < 1.0, "answered at once, not at a deadline"
    assert answered["tryagain"] > 0, answered
    assert any(dc.info(node)["cluster_partitions_rebuilding"] > 0 for node in NODES), "the commands ran during the rebuilds"
    wait_for(lambda: all(dc.info(node)["cluster_partitions_rebuilding"] == 0 for node in NODES), timeout=30, what="the rebuilds")
    for index in range(30):
        assert clients[index % 3].set(f"early{index}", f"v{index}") is True
        assert clients[(index + 1) % 3].get(f"early{index}") == f"v{index}"
    wait_for(lambda: replicas_identical(dc), timeout=20, what="identical replicas")


def test_hints_of_durable_namespaces_survive_their_keepers_restart(tmp_path):
    # Anti-entropy left at its default (minutes): what reaches the returning node comes from hints.
    dc = DataCenter(tmp_path, namespaces=DURABLE)
    try:
        dc.start_all()
        dc.kill9("e2")
        client = dc.client("e1")
        written = {f"owed:{index}": f"v{index}" for index in range(300)}
        for key, value in written.items():
            assert client.set(key, value)
        # The primaries (e1 and e3 while e2 is down) keep what e2 misses.
        wait_for(lambda: dc.info("e1")["cluster_hints_held"] + dc.info("e3")["cluster_hints_held"] >= len(written),
                 timeout=20, what="hints for e2")
        held = dc.info("e1")["cluster_hints_held"]
        assert held > 0
        time.sleep(0.5)  # the write-back window: the hint log is on disk
        dc.kill9("e1")
        dc.start("e1")
        assert dc.info("e1")["cluster_hints_held"] == held, "the hints came back from the disk"
        dc.start("e2")
        wait_for(lambda: dc.info("e1")["cluster_hints_held"] == 0 and dc.info("e3")["cluster_hints_held"] == 0,
                 timeout=30, what="hints replayed to e2")
        assert dc.info("e1")["cluster_hints_replayed"] >= 1
        wait_for(lambda: replicas_identical(dc), timeout=30, what="identical replicas")
        returned = dc.client("e2")
        assert returned.dbsize() >= len(written)
        # Replayed hints leave the log (lazily: within a second; one a crash kept is replayed
        # again, which changes nothing): another restart brings none back.
        time.sleep(1.5)
        dc.kill9("e1")
        dc.start("e1")
        assert dc.info("e1")["cluster_hints_held"] == 0
    finally:
        codes = dc.stop_all()
    assert all(code == 0 for node, code in codes.items()), codes


def test_dead_states_are_collected_once_their_grace_passed(tmp_path):
    dc = DataCenter(tmp_path, namespaces=DURABLE, settings="  anti_entropy_interval: 1s\n  dead_state_grace: 3s\n")
    try:
        dc.start_all()
        client = dc.client("e1")
        client.mset({f"k{index}": str(index) for index in range(200)})
        # A dead counter's record stays (a later increment merges against its contributions).
        client.incrby("counted", 5)
        client.delete("counted")
        client.delete(*[f"k{index}" for index in range(100)])
        for index in range(100, 120):
            client.set(f"k{index}", "short", px=200)
        # Every replica keeps the deleted and expired keys' records for a while (replicas merge
        # deletes through them), then collects them by age, all alike.
        wait_for(lambda: all(dc.info(node)["cluster_dead_states"] >= 100 for node in NODES), timeout=10,
                 what="dead states at every replica")
        wait_for(lambda: all(dc.info(node)["cluster_dead_states"] == 1 for node in NODES), timeout=20,
                 what="dead states collected at every replica")
        # Nothing came back: anti-entropy passes (every second) find the replicas equal.
        time.sleep(3)
        wait_for(lambda: replicas_identical(dc), timeout=10, what="identical replicas after the collection")
        for node in NODES:
            other = dc.client(node)
            assert other.mget([f"k{index}" for index in range(120)]) == [None] * 120, node
            assert other.mget([f"k{index}" for index in range(120, 200)]) == [str(index) for index in range(120, 200)]
        assert all(dc.info(node)["cluster_dead_states"] == 1 for node in NODES), "the counter's stays"
        assert client.incr("counted") == 1 and dc.client("e3").get("counted") == "1"
        wait_for(lambda: replicas_identical(dc), timeout=10, what="the increment at every replica")
        time.sleep(0.2)  # and on their disks (write-back)
        # The disk forgot them too: a restart brings back neither the values nor their deletes.
        dc.kill9("e2")
        dc.start("e2")
        assert dc.client("e2").dbsize() == 81
        assert "last ran longer ago than cluster.dead_state_grace" not in dc.log("e2")
        # Away longer than the grace (its marker's time is refreshed every tenth of it): it says
        # keys deleted meanwhile could come back from it.
        dc.kill9("e2")
        time.sleep(4)
        dc.start("e2")
        assert "last ran longer ago than cluster.dead_state_grace" in dc.log("e2")
    finally:
        codes = dc.stop_all()
    assert all(code == 0 for code in codes.values()), codes
