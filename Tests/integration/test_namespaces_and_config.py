"""Namespaces from the YAML configuration, strong-key refusal, INFO keyspace, bad configs.

How: a server runs the standard configuration (default, session with default_ttl 30m, strong
config, pinned with eviction none, profile with strong_keys ["profile:*:email"]).
* default_ttl: keys *created* in `session:` without a TTL get TTL 1800 (SET, SETNX, MSET, INCR,
  APPEND...), keys of `default` get -1, KEEPTTL keeps a TTL, an explicit EX wins, and the
  longest prefix decides the namespace (checked with nested prefixes in a second config).
* strong keys on a single node (one voter: every command is its own quorum): `config:*` and
  `profile:*:email` take the strong commands (SET, GET, INCR, EXPIRE, DEL...) through the
  strong engine; commands strong keys do not support, and commands mixing strong and eventual
  keys, answer a clear error and store nothing; keys that only look similar stay eventual.
* INFO keyspace has one ``ns_<name>`` line per namespace with keys, expires, bytes (key + value
  + 200 per entry), prefix, consistency, durability, eviction and default_ttl_ms.
* bad configuration files make the server exit non-zero within seconds, naming the field.
"""

import subprocess

import pytest

from conftest import ENTRY_OVERHEAD, MERIDIAN_SERVER, MeridianProcess, free_port, make_config

UNSUPPORTED = b"is not supported on strong keys"
MIXED = b"mixes strong and eventual keys"


def test_default_ttl_of_session_namespace(meridian_ns):
    c = meridian_ns.client()
    c.set("session:x", "v")
    assert c.ttl("session:x") in (1799, 1800)
    c.set("plain", "v")
    assert c.ttl("plain") == -1
    c.set("session:y", "v", ex=100)
    assert c.ttl("session:y") in (99, 100)
    c.set("session:y", "w", keepttl=True)
    assert c.ttl("session:y") in (99, 100)
    assert c.get("session:y") == "w"
    c.set("session:y", "z")  # documented: a plain SET gives the default TTL again
    assert c.ttl("session:y") in (1799, 1800)
    assert c.pttl("session:x") > 1_790_000
    # other creating commands get it too (docs/CONFIGURATION.md)
    c.setnx("session:n", "1")
    c.mset({"session:m1": "1", "session:m2": "2"})
    c.incr("session:c")
    c.append("session:a", "x")
    for k in ("session:n", "session:m1", "session:m2", "session:c", "session:a"):
        assert c.ttl(k) in (1799, 1800), k
    # ... but not the default namespace, and not when a TTL is given
    c.incr("counter")
    assert c.ttl("counter") == -1
    c.set("session:px", "v", px=5000)
    assert c.ttl("session:px") in (4, 5)
    assert c.persist("session:x") is True
    assert c.ttl("session:x") == -1
    ks = c.info("keyspace")
    assert ks["ns_session"]["default_ttl_ms"] == 1_800_000
    assert ks["ns_session"]["expires"] == 7


def test_longest_prefix_wins(start_meridian):
    namespaces = """\
  - { name: default, prefix: "", durability: memory }
  - { name: a, prefix: "a:", durability: memory, default_ttl: 10m }
  - { name: ab, prefix: "a:b:", durability: memory, default_ttl: 20m }
  - { name: abc, prefix: "a:b:c", durability: memory, default_ttl: 30s }
"""
    server = start_meridian(make_config(namespaces))
    c = server.client()
    expected = {"a:x": 600, "a:b": 600, "a:bx": 600, "a:b:x": 1200, "a:b:c": 30, "a:b:cd": 30, "a:b:": 1200,
                "b:a:x": -1, "A:x": -1}
    for key in expected:
        c.set(key, "v")
    got = {key: c.ttl(key) for key in expected}
    assert all(abs(got[k] - v) <= 1 if v > 0 else got[k] == v for k, v in expected.items()), got
    ks = c.info("keyspace")
    assert (ks["ns_a"]["keys"], ks["ns_ab"]["keys"], ks["ns_abc"]["keys"], ks["ns_default"]["keys"]) == (3, 2, 2, 2)


def test_strong_keys_on_a_single_node(meridian_ns):
    raw = meridian_ns.raw()
    assert raw.command("SET", "profile:1:name", "Ada") == ("simple", b"OK")
    assert raw.command("SET", "plain", "1") == ("simple", b"OK")
    # the strong commands work, each committed by the node's own Paxos log
    assert raw.command("SET", "config:x", "v") == ("simple", b"OK")
    assert raw.command("GET", "config:x") == ("bulk", b"v")
    assert raw.command("SET", "profile:1:email", "a@b") == ("simple", b"OK")
    assert raw.command("SETNX", "config:x", "w") == ("int", 0)
    assert raw.command("GETSET", "config:x", "w") == ("bulk", b"v")
    assert raw.command("INCR", "config:n") == ("int", 1)
    assert raw.command("INCRBY", "config:n", "41") == ("int", 42)
    assert raw.command("EXPIRE", "config:n", "100") == ("int", 1)
    assert raw.command("TTL", "config:n") == ("int", 100)
    assert raw.command("PERSIST", "config:n") == ("int", 1)
    assert raw.command("TTL", "config:n") == ("int", -1)
    # several keys in one command must share a partition (a hash tag), as in Redis Cluster
    assert raw.command("EXISTS", "config:x", "config:n")[1].startswith(b"CROSSSLOT")
    assert raw.command("SET", "config:{t}a", "1") == ("simple", b"OK")
    assert raw.command("SET", "config:{t}b", "2") == ("simple", b"OK")
    assert raw.command("EXISTS", "config:{t}a", "config:{t}b", "config:{t}c") == ("int", 2)
    assert raw.command("DEL", "config:{t}a", "config:{t}b", "config:{t}c") == ("int", 2)
    assert raw.command("TYPE", "config:x") == ("simple", b"string")
    assert raw.command("SET", "config:x", "z", "IFEQ", "nope") == ("bulk", None)
    assert raw.command("SET", "config:x", "z", "IFEQ", "w") == ("simple", b"OK")
    assert raw.command("GETDEL", "config:x") == ("bulk", b"z")
    assert raw.command("DEL", "config:x") == ("int", 0)
    assert raw.command("DEL", "config:n") == ("int", 1)
    # what strong keys do not support, or mixes the two classes, is refused and changes nothing
    refused = [
        (("APPEND", "config:x", "v"), UNSUPPORTED), (("INCRBYFLOAT", "profile:1:email", "1"), UNSUPPORTED),
        (("GETEX", "config:x", "EX", "10"), UNSUPPORTED), (("SETRANGE", "config:x", "0", "v"), UNSUPPORTED),
        (("MSET", "plain", "2", "config:y", "v"), MIXED), (("MSETNX", "fresh", "1", "profile:2:email", "v"), MIXED),
        (("RENAME", "profile:1:name", "config:moved"), MIXED), (("RENAME", "profile:1:name", "profile:1:email"), MIXED),
        (("MGET", "config:x", "profile:1:name"), MIXED), (("EXPIRE", "config:x", "10", "NX"), b"not supported on strong keys"),
    ]
    for args, expected in refused:
        reply = raw.command(*args)
        assert reply[0] == "error" and expected in reply[1], (args, reply)
    # strong keys obey the key limit, and one strong command holds at most about 1 MiB
    reply = raw.command("SET", "config:" + "k" * 300, "v")
    assert reply[0] == "error" and b"key too long" in reply[1], reply
    big = "v" * (500 * 1024)
    assert raw.command("MULTI") == ("simple", b"OK")
    for name in ("a", "b", "c"):
        assert raw.command("SET", "config:{big}" + name, big) == ("simple", b"QUEUED")
    reply = raw.command("EXEC")
    assert reply[0] == "error" and b"strong command too large" in reply[1], reply
    assert raw.command("EXISTS", "config:{big}a") == ("int", 0)
    assert raw.command("GET", "plain") == ("bulk", b"1")
    assert raw.command("EXISTS", "fresh", "profile:1:emails") == ("int", 0)
    assert [raw.command("EXISTS", key) for key in ("config:x", "config:y", "config:moved")] == [("int", 0)] * 3
    assert raw.command("GET", "profile:1:name") == ("bulk", b"Ada")
    assert raw.command("GET", "profile:1:email") == ("bulk", b"a@b")
    # keys that only look similar are eventual
    assert raw.command("SET", "profile:1:emails", "v") == ("simple", b"OK")
    assert raw.command("SET", "configx", "v") == ("simple", b"OK")
    assert raw.command("SET", "Config:x", "v") == ("simple", b"OK")
    assert raw.command("DEL", "profile:1:name") == ("int", 1)
    raw.close()


def test_info_keyspace_per_namespace(meridian_ns):
    c = meridian_ns.client()
    c.mset({"d1": "12345", "d2": "x"})
    c.set("d3", "y", ex=100)
    c.set("session:s1", "abc")
    c.set("pinned:p", "v" * 10)
    c.set("profile:1:name", "n")
    with meridian_ns.raw() as raw:
        kind, payload = raw.command("INFO", "keyspace")
    assert kind == "bulk"
    text = payload.decode()
    lines = {line.split(":", 1)[0]: line.split(":", 1)[1] for line in text.splitlines() if line.startswith("ns_")}
    assert set(lines) == {"ns_default", "ns_session", "ns_config", "ns_pinned", "ns_profile"}, text

    def fields(name):
        return dict(kv.split("=", 1) for kv in lines[name].split(","))

    d = fields("ns_default")
    assert d == {"keys": "3", "expires": "1", "bytes": str((2 + 5 + ENTRY_OVERHEAD) + (2 + 1 + ENTRY_OVERHEAD) + (2 + 1 + ENTRY_OVERHEAD)),
                 "expired": "0", "evicted": "0", "prefix": "", "consistency": "eventual", "durability": "memory",
                 "eviction": "lru", "default_ttl_ms": "0"}, d
    s = fields("ns_session")
    assert s == {"keys": "1", "expires": "1", "bytes": str(10 + 3 + ENTRY_OVERHEAD), "expired": "0", "evicted": "0",
                 "prefix": "session:", "consistency": "eventual", "durability": "memory", "eviction": "lru",
                 "default_ttl_ms": "1800000"}, s
    cfg = fields("ns_config")
    assert (cfg["keys"], cfg["consistency"], cfg["durability"], cfg["eviction"], cfg["prefix"]) == (
        "0", "strong", "write-through", "none", "config:")
    p = fields("ns_pinned")
    assert (p["keys"], p["bytes"], p["eviction"], p["durability"]) == ("1", str(8 + 10 + ENTRY_OVERHEAD), "none", "memory")
    pr = fields("ns_profile")
    # defaults of an unspecified namespace: eventual, write-back, lru
    assert (pr["keys"], pr["consistency"], pr["durability"], pr["eviction"]) == ("1", "eventual", "write-back", "lru")
    assert "db0:keys=6,expires=2" in text
    info = c.info()
    assert info["used_memory"] == sum(int(fields(n)["bytes"]) for n in lines)


BASE = make_config().replace("@PORT@", "7399")

BAD_CONFIGS = [
    ("unknown-field", BASE.replace("eviction: lru }", "evicton: lru }", 1), "namespaces[0].evicton"),
    ("bad-durability", BASE.replace("durability: memory, eviction: lru, default_ttl", "durability: x, eviction: lru, default_ttl"),
     "namespaces[1].durability: expected one of memory, write-back, write-through, got 'x'"),
    ("bad-maxmemory", BASE + "limits: { maxmemory: lots }\n", "limits.maxmemory"),
    ("duplicate-node", BASE.replace('        - { name: east-1, client: "127.0.0.1:7399" }\n',
                                    '        - { name: east-1, client: "127.0.0.1:7399" }\n'
                                    '        - { name: east-1, client: "127.0.0.1:7398" }\n'),
     "cluster.datacenters[0].nodes[1].name"),
    ("bad-default-ttl", BASE.replace("default_ttl: 30m", "default_ttl: soon"), "namespaces[1].default_ttl"),
    ("huge-default-ttl", BASE.replace("default_ttl: 30m", "default_ttl: 106751991167d"), "namespaces[1].default_ttl"),
    ("bad-consistency", BASE.replace("consistency: strong", "consistency: linearizable"), "namespaces[2].consistency"),
    ("duplicate-prefix", BASE.replace('prefix: "pinned:"', 'prefix: "config:"'), "namespaces[3].prefix"),
    ("unknown-top-level", BASE + "extra: 1\n", "extra"),
    ("bad-client-address", BASE.replace("127.0.0.1:7399", "nowhere"), "cluster.datacenters[0].nodes[0].client"),
    ("missing-cluster", "namespaces:\n" + BASE.split("namespaces:\n", 1)[1], "cluster"),
]


@pytest.mark.parametrize("name,text,field", BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS])
def test_bad_config_refused(tmp_path, name, text, field):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    result = subprocess.run([MERIDIAN_SERVER, "--config", str(path), "--port", str(free_port()), "--bind", "127.0.0.1",
                             "--data-dir", str(tmp_path / "d")],
                            capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"{name}: server accepted the configuration:\n{output}"
    assert field in output, f"{name}: message does not name {field!r}:\n{output}"
    assert "ready to accept connections" not in output


def test_good_config_is_accepted_by_the_same_path(tmp_path):
    """Guards the test above: the unmodified base configuration is valid."""
    server = MeridianProcess(tmp_path / "good", config_text=BASE)
    server.start()  # --port overrides the 7399 of the file with a free port of ours
    assert server.client().ping() is True
    assert server.stop() == 0
