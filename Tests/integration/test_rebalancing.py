"""Rebalancing a data center (docs/CLUSTER.md, "Rebalancing"): real processes on loopback ports
chosen here — three members with three replicas of every partition, and a spare listed in the
configuration.

What it proves: a spare serves no command on keys until it is added; `meridian cluster
add-node` commits the change through the placement log and follows it to its end while a
write and read load runs through the members: a quarter of the replica slots move (each moving
partition changes exactly one replica), every key loaded before and every write acknowledged
during the move reads back through every node — the new one included — with no client error,
the new replicas' digests equal the others', and the nodes that gave a partition up drop it.
The added node keeps its membership and data across a SIGKILL and restart. `remove-node` moves
its partitions back the same way; a placement voter cannot be removed, a node outside the
configuration cannot be added, a member cannot be added twice.
"""
from __future__ import annotations

import random
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis

from conftest import MERIDIAN_SERVER, wait_for
from test_scale_out import DURABLE, PARTITIONS, DataCenter, write_load

MERIDIAN = str(Path(MERIDIAN_SERVER).with_name("meridian"))
MEMBERS = ("e1", "e2", "e3")
SPARE = "e4"
SLOTS_PER_PARTITION = 16384 // PARTITIONS


def owners_by_partition(dc: DataCenter, node: str) -> list[tuple[str, ...]]:
    """Each partition's replicas (client ports, primary first), from CLUSTER SLOTS."""
    owners: list[tuple[str, ...] | None] = [None] * PARTITIONS
    for start, end, *nodes in dc.client(node).execute_command("CLUSTER", "SLOTS"):
        for partition in range(start // SLOTS_PER_PARTITION, end // SLOTS_PER_PARTITION + 1):
            owners[partition] = tuple(str(entry[1]) for entry in nodes)
    assert all(entry is not None for entry in owners)
    return owners


def read_load(dc: DataCenter, nodes: tuple[str, ...], keys: dict, stop: threading.Event, errors: list, reads: list):
    """One thread per node: GETs of keys loaded before, each checked against its value."""
    def run(node: str):
        client = dc.client(node, socket_timeout=10)
        names = list(keys)
        generator = random.Random(node)
        while not stop.is_set():
            key = generator.choice(names)
            try:
                value = client.get(key)
                if value != keys[key]:
                    errors.append((node, key, f"read {value!r}"))
                reads.append(1)
            except redis.ResponseError as error:
                errors.append((node, key, str(error)))
    threads = [threading.Thread(target=run, args=(node,)) for node in nodes]
    for thread in threads:
        thread.start()
    return threads


def change(dc: DataCenter, command: str, node: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MERIDIAN, "cluster", command, node, "--config", str(dc.config), "--timeout", "120"],
        capture_output=True, text=True, timeout=180)


def under_load(dc: DataCenter, keys: dict, action):
    """Runs `action` while a write load and a read load run through the three first members;
    returns (acknowledged writes, errors, reads, action's result)."""
    stop = threading.Event()
    acknowledged: dict[str, str] = {}
    errors: list = []
    reads: list = []
    threads = write_load(dc, MEMBERS, stop, acknowledged, errors, "during-")
    threads += read_load(dc, MEMBERS, keys, stop, errors, reads)
    time.sleep(1)
    try:
        result = action()
        time.sleep(1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    return acknowledged, errors, reads, result


def settled(dc: DataCenter, nodes: tuple[str, ...]) -> bool:
    """Every node at the same placement with no change running, every owner's digest equal,
    and no node holding a partition it does not own."""
    infos = [dc.info(node) for node in nodes]
    if len({info["cluster_placement_epoch"] for info in infos}) != 1 or any(info["cluster_change"] != "none" for info in infos):
        return False
    owners = owners_by_partition(dc, nodes[0])
    port_of = {str(dc.ports[f"{node}-client"]): node for node in nodes}
    digests = {node: dc.digests(node) for node in nodes}
    for partition in range(PARTITIONS):
        owning = {port_of[port] for port in owners[partition]}
        if len({digests[node][partition] for node in owning}) != 1:
            return False
        if any(digests[node][partition] is not None for node in nodes if node not in owning):
            return False
    return True


def test_a_spare_joins_and_leaves_under_load(tmp_path):
    dc = DataCenter(tmp_path, namespaces=DURABLE, members=MEMBERS, spares=(SPARE,), settings="  grace: 1s\n")
    try:
        dc.start_all()
        loaded = {f"key-{index}": f"value-{index}" for index in range(2_000)}
        pipe = dc.client("e1").pipeline(transaction=False)
        for key, value in loaded.items():
            pipe.set(key, value)
        assert all(pipe.execute())
        dc.start(SPARE)
        spare = dc.client(SPARE)
        assert spare.info("cluster")["cluster_member"] == "no"
        with pytest.raises(redis.exceptions.TryAgainError, match="not a member"):
            spare.get("key-1")
        # Refused changes say why, and change nothing.
        with pytest.raises(redis.ResponseError, match="placement voter"):
            dc.client("e2").execute_command("CLUSTER", "REMOVENODE", "e3")
        with pytest.raises(redis.ResponseError, match="not a node of this data center"):
            spare.execute_command("CLUSTER", "ADDNODE", "e9")
        with pytest.raises(redis.ResponseError, match="already a member"):
            dc.client("e3").execute_command("CLUSTER", "ADDNODE", "e2")
        before = owners_by_partition(dc, "e1")
        epoch = dc.info("e1")["cluster_placement_epoch"]

        acknowledged, errors, reads, result = under_load(dc, loaded, lambda: change(dc, "add-node", SPARE))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "done in" in result.stdout, result.stdout
        assert errors == [], errors[:10]
        assert len(acknowledged) > 100 and len(reads) > 100, (len(acknowledged), len(reads))
        everyone = MEMBERS + (SPARE,)
        wait_for(lambda: settled(dc, everyone), timeout=30, what="every node at the final placement, replicas equal")
        assert dc.info("e1")["cluster_placement_epoch"] > epoch + 1
        after = owners_by_partition(dc, "e1")
        spare_port = str(dc.ports[f"{SPARE}-client"])
        moved = 0
        for old, new in zip(before, after):
            if set(old) != set(new):
                # Exactly one replica changed: the spare came in.
                assert len(set(old) - set(new)) == 1 and set(new) - set(old) == {spare_port}, (old, new)
                moved += 1
        # A quarter of the 64 x 3 replica slots, give or take the hash's luck.
        assert 0.15 <= moved / (PARTITIONS * 3) <= 0.35, moved
        for node in everyone:
            client = dc.client(node)
            names = list(loaded) + list(acknowledged)
            values = client.mget(names)
            expected = [loaded.get(name) or acknowledged[name] for name in names]
            assert values == expected, node
        assert dc.info(SPARE)["cluster_member"] == "yes"
        assert dc.info(SPARE)["cluster_move_entries_received"] > 0

        # The new member keeps its place and its data across a crash.
        dc.kill9(SPARE)
        dc.start(SPARE)
        assert dc.info(SPARE)["cluster_member"] == "yes"
        assert dc.info(SPARE)["cluster_partitions_rebuilding"] == 0
        wait_for(lambda: dc.info("e1")["cluster_members_alive"] == 4, timeout=20, what="the new member alive again")
        assert dc.client(SPARE).get("key-7") == "value-7"

        acknowledged, errors, reads, result = under_load(dc, loaded, lambda: change(dc, "remove-node", SPARE))
        assert result.returncode == 0, result.stdout + result.stderr
        assert errors == [], errors[:10]
        wait_for(lambda: settled(dc, everyone), timeout=30, what="the partitions back on three nodes")
        assert set(map(frozenset, owners_by_partition(dc, "e1"))) == set(map(frozenset, before))
        assert dc.info(SPARE)["cluster_member"] == "no"
        for node in MEMBERS:
            names = list(loaded) + list(acknowledged)
            assert dc.client(node).mget(names) == [loaded.get(name) or acknowledged[name] for name in names], node
    finally:
        codes = dc.stop_all()
    assert all(code == 0 for node, code in codes.items() if node != SPARE or dc.procs[node].returncode != -9), codes
