"""Cross-DC shipping with several nodes per data center (docs/CLUSTER.md, "Cross-DC shipping
with many nodes per DC"): a data center of three nodes beside a second data center of one or two
nodes, real processes on loopback ports chosen here.

What it proves: every node ships the deltas of the commands it executed, from its own log, to
its stream target in the other data center (INFO replication says which node and how many it
sent); what a data center of several nodes receives reaches each key's owners there (their
replicas stay identical); writes, deletes, TTLs and counters made through any node of either
data center converge. A node of the larger data center killed with SIGKILL under load from
both sides — the one the other data center streams to — costs no acknowledged write on either
side: the other data center's stream moves to the next node at once and back once it returns,
and after its restart every acknowledged key is everywhere. A node added to the larger data
center under load from both sides ships what it executed; `meridian cluster remove-node` waits
until the other data center acknowledged its last deltas, and nothing acknowledged is lost.
"""
from __future__ import annotations

import subprocess
import threading
import time

import pytest
import redis

from conftest import wait_for
from test_rebalancing import MERIDIAN, owners_by_partition
from test_scale_out import DURABLE, MEMORY, NODES, DataCenter, replicas_identical


def peer_line(dc: DataCenter, node: str, datacenter: str) -> dict:
    return dc.client(node).info("replication")[f"peer_{datacenter}"]


def links_up(dc: DataCenter) -> bool:
    east = all(peer_line(dc, node, "west")["connected"] == 1 for node in NODES)
    west = all(peer_line(dc, node, "east")["connected"] == 1 for node in dc.west)
    return east and west


def owners_identical(dc: DataCenter, nodes: tuple[str, ...], replicas: int) -> bool:
    """Each partition's digest is the same at each of its `replicas` owners (CLUSTER SLOTS)."""
    port_to_node = {dc.ports[f"{node}-client"]: node for node in nodes}
    owners = owners_by_partition(dc, nodes[0])
    digests = {node: dc.digests(node) for node in nodes}
    for partition, ports in enumerate(owners):
        assert len(ports) == replicas, (partition, ports)
        held = [digests[port_to_node[int(port)]][partition] for port in ports]
        if any(digest != held[0] for digest in held):
            return False
    return True


def holds(client: redis.Redis, expected: dict[str, str | None]) -> bool:
    keys = list(expected)
    for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        if client.mget(chunk) != [expected[key] for key in chunk]:
            return False
    return True


def test_every_node_ships_its_own_writes_to_a_second_data_center(tmp_path):
    # Three nodes with two replicas of each partition beside a data center of two nodes: the
    # streams pair up (e1 -> w1, e2 -> w2, e3 -> w1; w1 -> e1, w2 -> e2).
    dc = DataCenter(tmp_path, replication_factor=2, west=("w1", "w2"))
    try:
        dc.start_all()
        wait_for(lambda: links_up(dc), timeout=20, what="the links between the data centers")
        expected: dict[str, str | None] = {}
        for node in NODES + dc.west:
            client = dc.client(node)
            pipe = client.pipeline(transaction=False)
            for index in range(300):
                pipe.set(f"{node}:k{index}", f"{node}-{index}")
                expected[f"{node}:k{index}"] = f"{node}-{index}"
            pipe.execute()
            client.delete(*[f"{node}:k{index}" for index in range(0, 300, 10)])
            for index in range(0, 300, 10):
                expected[f"{node}:k{index}"] = None
            client.set(f"{node}:ttl", "short-lived", ex=1000)
            expected[f"{node}:ttl"] = "short-lived"
        for node in NODES + dc.west:
            for _ in range(3):
                dc.client(node).incr("hits")
        for node in NODES + dc.west:
            wait_for(lambda: holds(dc.client(node), expected), timeout=20, what=f"every write at {node}")
            assert 900 < dc.client(node).ttl("w2:ttl") <= 1000, "the TTL travels with the value"
        wait_for(lambda: all(dc.client(node).get("hits") == "15" for node in NODES + dc.west),
                 timeout=20, what="every node's increments everywhere")
        # Every node shipped its own deltas, to its own target; none of the other links
        # carried a stream of it.
        targets = {"e1": "w1", "e2": "w2", "e3": "w1", "w1": "e1", "w2": "e2"}
        for node, target in targets.items():
            line = peer_line(dc, node, "west" if node in NODES else "east")
            assert line["node"] == target, (node, line)
            assert line["deltas_sent"] > 0, (node, line)
        wait_for(lambda: all(peer_line(dc, node, "west")["lag_ms"] == 0 for node in NODES),
                 timeout=20, what="east's logs acknowledged by west")
        # Both data centers' owners hold the same records: within each, replicas are identical.
        wait_for(lambda: owners_identical(dc, NODES, replicas=2), timeout=20, what="identical replicas in east")
        west_digests = [[dc.client(node).execute_command("CLUSTER", "DIGEST", p) for p in range(64)] for node in dc.west]
        assert west_digests[0] == west_digests[1]
    finally:
        codes = dc.stop_all()
    assert all(code == 0 for code in codes.values()), codes


def load(dc: DataCenter, node: str, stop: threading.Event, acknowledged: dict, errors: list):
    client = dc.client(node, socket_timeout=10)
    index = 0
    while not stop.is_set():
        key = f"{node}:load{index}"
        try:
            if client.set(key, f"v{index}"):
                acknowledged[key] = f"v{index}"
        except redis.ResponseError as error:
            errors.append((node, key, f"{type(error).__name__}: {error}"))
        except redis.ConnectionError:
            return  # this node was killed
        index += 1


def start_load(dc: DataCenter, nodes: tuple[str, ...] = ("e1", "e2", "e3", "w1")):
    """One writer per node of both data centers (`load`); what stops them and what they record."""
    stop = threading.Event()
    acknowledged: dict[str, str] = {}
    errors: list = []
    threads = [threading.Thread(target=load, args=(dc, node, stop, acknowledged, errors)) for node in nodes]
    for thread in threads:
        thread.start()
    return stop, acknowledged, errors, threads


@pytest.mark.parametrize("namespaces", [MEMORY, DURABLE], ids=["memory", "write-back"])
def test_a_killed_stream_target_costs_no_acknowledged_write_in_either_data_center(tmp_path, namespaces):
    dc = DataCenter(tmp_path, namespaces=namespaces, settings="  anti_entropy_interval: 2s\n", west=("w1",))
    try:
        dc.start_all()
        wait_for(lambda: links_up(dc), timeout=20, what="the links between the data centers")
        stop, acknowledged, errors, threads = start_load(dc)
        time.sleep(1.5)
        # e1 receives west's stream and ships its own; it executed a third of east's writes.
        dc.kill9("e1")
        threads[0].join(10)
        before = len(acknowledged)
        # West's stream moves to the next node of east, which passes it on to the owners.
        wait_for(lambda: peer_line(dc, "w1", "east")["node"] == "e2", timeout=10, what="west streaming to e2")
        during = {f"during:{index}": str(index) for index in range(50)}
        dc.client("w1").mset(during)
        wait_for(lambda: holds(dc.client("e3"), during), timeout=20, what="west's writes in east while e1 is down")
        time.sleep(1)
        assert len(acknowledged) > before + 100, "writes keep succeeding in both data centers"
        dc.start("e1")
        time.sleep(2)
        stop.set()
        for thread in threads[1:]:
            thread.join(10)
        # Only commands in flight to the killed node may fail, and they say so.
        assert len(errors) <= 2, errors
        assert all("may have been applied" in message for _, _, message in errors), errors
        for node in NODES + ("w1",):
            wait_for(lambda: holds(dc.client(node), acknowledged), timeout=60, what=f"every acknowledged write at {node}")
        wait_for(lambda: replicas_identical(dc), timeout=30, what="identical replicas in east")
        # The restarted node's log starts after its earlier run's: west caught up from a
        # snapshot of what it holds (taken once its partitions were rebuilt), and it ships again.
        assert peer_line(dc, "e1", "west")["snapshots_sent"] >= 1
        wait_for(lambda: peer_line(dc, "w1", "east")["node"] == "e1", timeout=10, what="west's stream back at e1")
        later = {f"after:{index}": str(index) for index in range(50)}
        dc.client("e1").mset(later)
        wait_for(lambda: holds(dc.client("w1"), later), timeout=20, what="writes through the restarted node at west")
    finally:
        codes = dc.stop_all()
    assert all(code == 0 for code in codes.values()), codes


def test_a_node_joins_and_leaves_while_both_data_centers_write(tmp_path):
    dc = DataCenter(tmp_path, spares=("e4",), west=("w1",))
    try:
        dc.start_all()
        dc.start("e4")
        wait_for(lambda: links_up(dc) and peer_line(dc, "e4", "west")["connected"] == 1, timeout=20,
                 what="the links between the data centers")
        stop, acknowledged, errors, threads = start_load(dc)
        added = subprocess.run([MERIDIAN, "cluster", "add-node", "e4", "--config", str(dc.config), "--timeout", "120"],
                               capture_output=True, text=True, timeout=180)
        assert added.returncode == 0, added.stdout + added.stderr
        # The new member executes the commands of the partitions it is primary of, with its own
        # dots, and ships them itself.
        through_new = {f"new:{index}": str(index) for index in range(200)}
        dc.client("e4").mset(through_new)
        removed = subprocess.run([MERIDIAN, "cluster", "remove-node", "e4", "--config", str(dc.config), "--timeout", "120"],
                                 capture_output=True, text=True, timeout=180)
        assert removed.returncode == 0, removed.stdout + removed.stderr
        assert "acknowledged by every other data center" in removed.stdout, removed.stdout
        assert peer_line(dc, "e4", "west")["deltas_sent"] > 0
        dc.stop("e4")
        stop.set()
        for thread in threads:
            thread.join(10)
        assert errors == [], errors[:5]
        expected = {**acknowledged, **through_new}
        for node in NODES + ("w1",):
            wait_for(lambda: holds(dc.client(node), expected), timeout=30, what=f"every acknowledged write at {node}")
        wait_for(lambda: replicas_identical(dc), timeout=30, what="identical replicas in east")
    finally:
        codes = dc.stop_all()
    assert all(code == 0 for code in codes.values()), codes


def test_records_the_owners_cannot_take_yet_wait_without_moving_the_stream(tmp_path):
    # Two replicas of each partition, both needed (`write_acks: quorum` of 2): while e3 is down,
    # west's records for e3's partitions cannot be acknowledged. The receiving node keeps
    # sending them again and holds the rest of the stream; the link stays, the stream does not
    # move to another node (which would meet the same owners), and all of it lands once e3 is back.
    dc = DataCenter(tmp_path, namespaces=DURABLE, replication_factor=2, west=("w1",))
    try:
        dc.start_all()
        wait_for(lambda: links_up(dc), timeout=20, what="the links between the data centers")
        dc.kill9("e3")
        sent = {f"held:{index}": str(index) for index in range(200)}
        dc.client("w1").mset(sent)
        time.sleep(6)  # three request timeouts
        assert peer_line(dc, "w1", "east")["node"] == "e1" and peer_line(dc, "w1", "east")["connected"] == 1
        assert "stream moves" not in dc.log("w1")
        assert "sending them again" in dc.log("e1")
        dc.start("e3")
        wait_for(lambda: holds(dc.client("e1"), sent), timeout=30, what="west's writes in east once e3 is back")
        wait_for(lambda: peer_line(dc, "w1", "east")["lag_ms"] == 0, timeout=20, what="west's log acknowledged")
        wait_for(lambda: owners_identical(dc, NODES, replicas=2), timeout=30, what="identical replicas in east")
    finally:
        codes = dc.stop_all()
    assert all(code == 0 for code in codes.values()), codes
