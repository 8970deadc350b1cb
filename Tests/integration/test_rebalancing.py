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
configuration (or a name no placement can hold) cannot be added, nor a member twice, nor a
spare that is not running; a voter that lost its placement log refuses to start.
"""
from __future__ import annotations

import random
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis

from conftest import MERIDIAN_SERVER, wait_for
from test_scale_out import DURABLE, PARTITIONS, DataCenter

MERIDIAN = str(Path(MERIDIAN_SERVER).with_name("meridian"))
MEMBERS = ("e1", "e2", "e3")
SPARE = "e4"
NEVER_STARTED = "e5"
SLOTS_PER_PARTITION = 16384 // PARTITIONS


def owners_by_partition(dc: DataCenter, node: str) -> list[tuple[str, ...]]:
    """Each partition's replicas (client ports, primary first), from CLUSTER SLOTS."""
    owners: list[tuple[str, ...] | None] = [None] * PARTITIONS
    for start, end, *nodes in dc.client(node).execute_command("CLUSTER", "SLOTS"):
        for partition in range(start // SLOTS_PER_PARTITION, end // SLOTS_PER_PARTITION + 1):
            owners[partition] = tuple(str(entry[1]) for entry in nodes)
    assert all(entry is not None for entry in owners)
    return owners


class Load:
    """Per member, one thread writing fresh keys and one reading loaded keys, until stopped.
    Every operation's end time and outcome is kept; any exception is an error (a timeout or a
    dropped connection included), and a thread that died is noticed."""

    def __init__(self, dc: DataCenter, loaded: dict, prefix: str):
        self.dc, self.loaded, self.prefix = dc, loaded, prefix
        self.stop = threading.Event()
        self.acknowledged: dict[str, str] = {}
        self.done: list[float] = []
        self.errors: list = []
        self.threads = [threading.Thread(target=self.write, args=(node,)) for node in MEMBERS]
        self.threads += [threading.Thread(target=self.read, args=(node,)) for node in MEMBERS]
        for thread in self.threads:
            thread.start()

    def write(self, node: str) -> None:
        client = self.dc.client(node, socket_timeout=10)
        index = 0
        while not self.stop.is_set():
            key, value = f"{self.prefix}{node}-{index}", f"value-{index}"
            try:
                if client.set(key, value):
                    self.acknowledged[key] = value
                    self.done.append(time.monotonic())
                else:
                    self.errors.append((node, key, "SET answered nil"))
            except Exception as error:  # noqa: BLE001 — every failure counts
                self.errors.append((node, key, f"{type(error).__name__}: {error}"))
            index += 1

    def read(self, node: str) -> None:
        client = self.dc.client(node, socket_timeout=10)
        names = list(self.loaded)
        generator = random.Random(node)
        while not self.stop.is_set():
            key = generator.choice(names)
            try:
                value = client.get(key)
                if value == self.loaded[key]:
                    self.done.append(time.monotonic())
                else:
                    self.errors.append((node, key, f"read {value!r}"))
            except Exception as error:  # noqa: BLE001
                self.errors.append((node, key, f"{type(error).__name__}: {error}"))

    def finish(self) -> None:
        assert all(thread.is_alive() for thread in self.threads), "a load thread died"
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def during(self, start: float, end: float) -> int:
        return sum(1 for moment in self.done if start <= moment <= end)


def change(dc: DataCenter, command: str, node: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MERIDIAN, "cluster", command, node, "--config", str(dc.config), "--timeout", "120"],
        capture_output=True, text=True, timeout=180)


def under_load(dc: DataCenter, loaded: dict, command: str, node: str, prefix: str):
    """Runs `meridian cluster COMMAND NODE` while the load runs through the three first members;
    checks that clients kept being served all along and saw no error; returns the writes
    acknowledged and the CLI's result."""
    load = Load(dc, loaded, prefix)
    time.sleep(1)
    started = time.monotonic()
    try:
        result = change(dc, command, node)
    finally:
        ended = time.monotonic()
        time.sleep(1)
        load.finish()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "done in" in result.stdout, result.stdout
    assert load.errors == [], load.errors[:10]
    # Served throughout: operations completed in every second of the change.
    for second in range(int(ended - started)):
        assert load.during(started + second, started + second + 1) > 0, f"no operation completed in second {second} of the change"
    return load.acknowledged, result


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
    dc = DataCenter(tmp_path, namespaces=DURABLE, members=MEMBERS, spares=(SPARE, NEVER_STARTED), settings="  grace: 1s\n")
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
        with pytest.raises(redis.ResponseError, match="not a node of this data center"):
            spare.execute_command("CLUSTER", "ADDNODE", "x" * 300)
        with pytest.raises(redis.ResponseError, match="already a member"):
            dc.client("e3").execute_command("CLUSTER", "ADDNODE", "e2")
        with pytest.raises(redis.ResponseError, match="has not been heard from"):
            dc.client("e1").execute_command("CLUSTER", "ADDNODE", NEVER_STARTED)
        before = owners_by_partition(dc, "e1")
        epoch = dc.info("e1")["cluster_placement_epoch"]
        assert all(dc.info(node)["cluster_placement_epoch"] == epoch for node in MEMBERS + (SPARE,))

        acknowledged, _ = under_load(dc, loaded, "add-node", SPARE, "join-")
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
        names = list(loaded) + list(acknowledged)
        expected = [loaded.get(name) or acknowledged[name] for name in names]
        for node in everyone:
            assert dc.client(node).mget(names) == expected, node
        assert dc.info(SPARE)["cluster_member"] == "yes"
        assert dc.info(SPARE)["cluster_move_entries_received"] > 0

        # The new member keeps its place and its data across a crash: right after the restart
        # (nothing written meanwhile, no anti-entropy pass due), each partition it owns has the
        # same digest on it as on the other owners.
        owned = [partition for partition in range(PARTITIONS) if spare_port in after[partition]]
        others = {partition: dc.client(next(node for node in MEMBERS if str(dc.ports[f"{node}-client"]) in after[partition]))
                  .execute_command("CLUSTER", "DIGEST", partition) for partition in owned}
        dc.kill9(SPARE)
        dc.start(SPARE)
        restarted = dc.client(SPARE)
        assert restarted.info("cluster")["cluster_member"] == "yes"
        assert restarted.info("cluster")["cluster_partitions_rebuilding"] == 0
        assert {partition: restarted.execute_command("CLUSTER", "DIGEST", partition) for partition in owned} == others
        wait_for(lambda: dc.info("e1")["cluster_members_alive"] == 4, timeout=20, what="the new member alive again")

        acknowledged, _ = under_load(dc, loaded, "remove-node", SPARE, "leave-")
        wait_for(lambda: settled(dc, everyone), timeout=30, what="the partitions back on three nodes")
        # Every partition back on its first owners, in their order (rendezvous placement).
        assert owners_by_partition(dc, "e1") == before
        assert dc.info(SPARE)["cluster_member"] == "no"
        with pytest.raises(redis.exceptions.TryAgainError, match="not a member"):
            dc.client(SPARE).get("key-1")
        names = list(loaded) + list(acknowledged)
        expected = [loaded.get(name) or acknowledged[name] for name in names]
        for node in MEMBERS:
            assert dc.client(node).mget(names) == expected, node

        # A placement voter that lost its log (but has learned changes) must not vote again.
        dc.procs["e1"].send_signal(signal.SIGTERM)
        assert dc.procs["e1"].wait(10) == 0
        shutil.rmtree(tmp_path / "data-e1" / "placement")
        refused = subprocess.run(
            [MERIDIAN_SERVER, "--config", str(dc.config), "--node", "e1", "--data-dir", str(tmp_path / "data-e1")],
            capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and "must not vote again" in refused.stdout + refused.stderr, refused
    finally:
        codes = dc.stop_all()
    assert all(code == 0 for node, code in codes.items() if node != SPARE or dc.procs[node].returncode != -9), codes


def test_a_join_survives_a_placement_voter_and_the_new_node_crashing(tmp_path):
    """The placement log and the moves carry on across crashes: a voter killed with SIGKILL
    right after the change committed, and the joining node killed in the middle of its
    streams, both restarted — the change still ends with every partition on its owners."""
    dc = DataCenter(tmp_path, namespaces=DURABLE, members=MEMBERS, spares=(SPARE,), settings="  grace: 1s\n")
    try:
        dc.start_all()
        loaded = {f"key-{index}": f"value-{index}" for index in range(10_000)}
        items = list(loaded.items())
        for start in range(0, len(items), 1_000):
            # A connection runs its forwarded commands one at a time: pipelines of a thousand
            # stay well within the client's timeout.
            pipe = dc.client("e1").pipeline(transaction=False)
            for key, value in items[start:start + 1_000]:
                pipe.set(key, value)
            assert all(pipe.execute())
        dc.start(SPARE)
        result = subprocess.run(
            [MERIDIAN, "cluster", "add-node", SPARE, "--config", str(dc.config), "--no-wait"],
            capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        dc.kill9("e2")
        wait_for(lambda: dc.info(SPARE)["cluster_move_entries_received"] > 0, timeout=30, what="the new node streaming")
        assert dc.info(SPARE)["cluster_partitions_moving"] > 0, "the join ended before the new node was killed"
        dc.kill9(SPARE)
        dc.start("e2")
        dc.start(SPARE)
        everyone = MEMBERS + (SPARE,)
        wait_for(lambda: settled(dc, everyone), timeout=60, what="the change ended, every owner's digest equal")
        assert dc.info(SPARE)["cluster_member"] == "yes"
        names = list(loaded)
        for node in everyone:
            assert dc.client(node).mget(names) == [loaded[name] for name in names], node
    finally:
        codes = dc.stop_all()
    assert all(code == 0 for node, code in codes.items() if dc.procs[node].returncode != -9), codes
