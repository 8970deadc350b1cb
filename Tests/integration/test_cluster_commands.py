"""CLUSTER introspection and the one-node-per-data-center rule (docs/CLUSTER.md, "Routing").

What it proves: CLUSTER KEYSLOT matches Redis's slot function (hash tags included); CLUSTER
SLOTS, SHARDS, NODES, MYID and INFO describe a one-node data center as one node owning every
slot, with a stable 40-hex id; errors are Redis's; redis-py's cluster client (a smart client)
discovers the node through CLUSTER SLOTS and works against it; a configuration with two nodes in
one data center, or replication_factor above 1, or a partition count that is not a power of two,
is refused at start with the field named.
"""
from __future__ import annotations

import re
import subprocess

import pytest
import redis
from redis.cluster import RedisCluster

from conftest import MERIDIAN_SERVER, client_for, make_config


def test_keyslot_matches_redis(meridian):
    r = client_for(meridian.port)
    assert r.execute_command("CLUSTER", "KEYSLOT", "somekey") == 11058
    assert r.execute_command("CLUSTER", "KEYSLOT", "foo{hash_tag}") == 2515
    assert r.execute_command("CLUSTER", "KEYSLOT", "{user1000}.following") == r.execute_command("CLUSTER", "KEYSLOT", "{user1000}.followers")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'cluster|keyslot'"):
        r.execute_command("CLUSTER", "KEYSLOT")
    with pytest.raises(redis.ResponseError, match="unknown subcommand 'ADDSLOTS'"):
        r.execute_command("CLUSTER", "ADDSLOTS", "1")


def test_one_node_owns_every_slot(start_meridian):
    server = start_meridian(make_config())
    r = client_for(server.port)
    node_id = r.execute_command("CLUSTER", "MYID")
    assert re.fullmatch(r"[0-9a-f]{40}", node_id)
    slots = r.execute_command("CLUSTER", "SLOTS")
    assert slots == [[0, 16383, ["127.0.0.1", server.port, node_id]]]
    shards = r.execute_command("CLUSTER", "SHARDS")
    assert len(shards) == 1
    shard = dict(zip(shards[0][::2], shards[0][1::2]))
    assert shard["slots"] == [0, 16383]
    node = dict(zip(shard["nodes"][0][::2], shard["nodes"][0][1::2]))
    assert node["id"] == node_id and node["port"] == server.port and node["role"] == "master" and node["health"] == "online"
    nodes = r.execute_command("CLUSTER", "NODES")
    assert re.match(rf"{node_id} 127\.0\.0\.1:{server.port}@\d+ myself,master - 0 0 1 connected 0-16383\n$", nodes)
    info = r.execute_command("CLUSTER", "INFO")
    assert "cluster_state:ok" in info and "cluster_slots_assigned:16384" in info and "meridian_partitions:1024" in info
    # RESP3: SHARDS entries are maps.
    r3 = client_for(server.port, protocol=3)
    shard3 = r3.execute_command("CLUSTER", "SHARDS")[0]
    assert shard3["slots"] == [0, 16383]
    # The id is stable across a restart (it names the cluster, data center and node).
    server.stop()
    server.start()
    assert client_for(server.port).execute_command("CLUSTER", "MYID") == node_id


def test_a_cluster_client_works_against_a_node(start_meridian):
    server = start_meridian(make_config())
    cluster = RedisCluster(host="127.0.0.1", port=server.port, decode_responses=True)
    try:
        assert cluster.set("{user:1}:name", "ada")
        assert cluster.get("{user:1}:name") == "ada"
        cluster.mset_nonatomic({"a": "1", "b": "2", "c": "3"})
        assert cluster.mget_nonatomic(["a", "b", "c"]) == ["1", "2", "3"]
        assert [node.port for node in cluster.get_nodes()] == [server.port]
    finally:
        cluster.close()


@pytest.mark.parametrize("cluster_text, field", [
    ("  datacenters:\n    - name: east\n      nodes:\n"
     "        - { name: east-1, client: \"127.0.0.1:1\" }\n        - { name: east-2, client: \"127.0.0.1:2\" }\n",
     "cluster.datacenters[0].nodes"),
    ("  replication_factor: 3\n  datacenters:\n    - name: east\n      nodes:\n        - { name: east-1, client: \"127.0.0.1:1\" }\n",
     "cluster.replication_factor"),
    ("  partitions: 1000\n  datacenters:\n    - name: east\n      nodes:\n        - { name: east-1, client: \"127.0.0.1:1\" }\n",
     "cluster.partitions"),
])
def test_unserved_topologies_are_refused_at_start(tmp_path, cluster_text, field):
    config = tmp_path / "meridian.yaml"
    config.write_text("cluster:\n  name: test\n" + cluster_text)
    result = subprocess.run(
        [MERIDIAN_SERVER, "--config", str(config), "--node", "east-1", "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert field in result.stderr + result.stdout
