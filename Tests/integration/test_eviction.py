"""Memory limits: LRU eviction of `eviction: lru` namespaces, `-OOM` for `eviction: none`.

How: servers are started with the standard namespaces (default/session/profile are lru,
pinned/config are `eviction: none`) and a small ``limits.maxmemory`` (or a runtime
``CONFIG SET maxmemory``). The tests write far more than fits and then read INFO: evicted_keys
must be positive and equal to the per-namespace ``evicted=`` counters, used_memory must stay
within maxmemory plus one entry (each entry is charged key + value + 200 bytes), every
`pinned:` key must survive, and once memory holds only pinned keys every denyoom write must get
exactly ``-OOM command not allowed when used memory > 'maxmemory'.`` while reads and DEL still
work (and free room for writes again). A last test checks that eviction is LRU-like: keys read
after every batch of writes survive while older keys are evicted.
"""

import time

from conftest import ENTRY_OVERHEAD, make_config

OOM = ("error", b"OOM command not allowed when used memory > 'maxmemory'.")


def _entry(key: str, value_len: int) -> int:
    return len(key.encode()) + value_len + ENTRY_OVERHEAD


def _fill(client, keys, value):
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.set(k, value)
    return pipe.execute(raise_on_error=False)


def test_lru_eviction_keeps_memory_bounded(start_meridian):
    server = start_meridian(make_config(maxmemory="64kb"))
    c = server.client()
    keys = [f"k:{i}" for i in range(2000)]
    results = _fill(c, keys, "v" * 100)
    assert results == [True] * 2000, "writes to an lru namespace must never be refused"
    info = c.info()
    assert info["maxmemory"] == 65536
    assert info["evicted_keys"] > 0
    assert info["used_memory"] <= 65536 + _entry(keys[-1], 100), info["used_memory"]
    dbsize = c.dbsize()
    assert 0 < dbsize < 2000
    assert dbsize * _entry("k:1000", 100) <= 65536 + 2 * _entry("k:1000", 100)
    assert info["evicted_keys"] + dbsize == 2000
    ks = c.info("keyspace")
    assert ks["ns_default"]["evicted"] == info["evicted_keys"]
    assert ks["ns_default"]["keys"] == dbsize
    assert c.get(keys[-1]) == "v" * 100, "the key just written must not be the one evicted"
    assert len(c.keys("*")) == dbsize


def test_pinned_keys_survive_and_oom_when_full(start_meridian):
    server = start_meridian(make_config(maxmemory="64kb"))
    c = server.client()
    pinned = [f"pinned:{i}" for i in range(20)]
    assert _fill(c, pinned, "p" * 100) == [True] * 20
    assert _fill(c, [f"k:{i}" for i in range(2000)], "v" * 100) == [True] * 2000
    assert c.info()["evicted_keys"] > 0
    assert sum(c.exists(k) for k in pinned) == 20, "a key of an `eviction: none` namespace was evicted"

    # Fill memory with pinned keys: the lru keys give way, then writes get -OOM.
    raw = server.raw()
    oom_at = None
    deadline = time.monotonic() + 30
    for i in range(20, 2000):
        if time.monotonic() > deadline:
            break
        reply = raw.command("SET", f"pinned:{i}", "p" * 100)
        if reply != ("simple", b"OK"):
            assert reply == OOM, reply
            oom_at = i
            break
    assert oom_at is not None, "memory never filled up"
    ks = c.info("keyspace")
    assert ks["ns_default"]["keys"] == 0, "lru keys must be evicted before any write is refused"
    assert ks["ns_pinned"]["keys"] == oom_at
    assert ks["ns_pinned"]["evicted"] == 0
    # every denyoom write is refused, in any namespace; reads and deletes still work
    for args in [("SET", "default-key", "x"), ("SET", "pinned:new", "x"), ("APPEND", "pinned:0", "x"),
                 ("INCR", "counter"), ("MSET", "a", "1", "b", "2"), ("SETNX", "pinned:zz", "1"),
                 ("SETEX", "pinned:zz", "10", "1"), ("GETSET", "pinned:1", "x")]:
        assert raw.command(*args) == OOM, args
    assert raw.command("GET", "pinned:0") == ("bulk", b"p" * 100)
    assert raw.command("EXISTS", *pinned) == ("int", 20)
    assert raw.command("EXPIRE", "pinned:5", "1000") == ("int", 1)
    assert c.info()["rejected_writes_oom"] >= 9
    assert raw.command("DEL", "pinned:0", "pinned:1", "pinned:2") == ("int", 3)
    assert raw.command("SET", "pinned:again", "p" * 10) == ("simple", b"OK")
    assert c.info()["used_memory"] <= 65536 + _entry("pinned:again", 100)
    raw.close()


def test_config_set_maxmemory_evicts_at_runtime(start_meridian):
    server = start_meridian(make_config())
    c = server.client()
    assert c.config_get("maxmemory") == {"maxmemory": "0"}
    assert _fill(c, [f"pinned:{i}" for i in range(10)], "p" * 100) == [True] * 10
    assert _fill(c, [f"k:{i}" for i in range(1000)], "v" * 100) == [True] * 1000
    assert c.info()["evicted_keys"] == 0
    used = c.info()["used_memory"]
    assert used == sum(_entry(f"k:{i}", 100) for i in range(1000)) + sum(_entry(f"pinned:{i}", 100) for i in range(10))
    assert c.config_set("maxmemory", "64kb") is True
    assert c.config_get("maxmemory") == {"maxmemory": "65536"}
    assert c.set("trigger", "x") is True
    info = c.info()
    assert info["evicted_keys"] > 0
    assert info["used_memory"] <= 65536 + _entry("trigger", 1)
    assert sum(c.exists(f"pinned:{i}") for i in range(10)) == 10
    # raising the limit stops eviction
    assert c.config_set("maxmemory", "10mb") is True
    before = c.info()["evicted_keys"]
    assert _fill(c, [f"more:{i}" for i in range(500)], "v" * 100) == [True] * 500
    assert c.info()["evicted_keys"] == before


def test_eviction_prefers_least_recently_used(start_meridian):
    """Keys read after every batch of writes survive ~3000 evictions (sampled LRU)."""
    server = start_meridian(make_config(maxmemory="256kb"))
    c = server.client()
    hot = [f"hot:{i}" for i in range(100)]
    c.mset({k: "h" * 100 for k in hot})
    for rnd in range(40):
        time.sleep(0.003)  # access times have millisecond resolution
        _fill(c, [f"cold:{rnd}:{i}" for i in range(100)], "c" * 100)
        time.sleep(0.003)
        c.mget(hot)
    evicted = c.info()["evicted_keys"]
    assert evicted > 2500
    survivors = sum(c.exists(k) for k in hot)
    cold_survivors = len(c.keys("cold:0:*")) + len(c.keys("cold:1:*"))
    assert survivors >= 80, f"only {survivors}/100 recently read keys survived {evicted} evictions"
    assert cold_survivors <= 20, f"{cold_survivors}/200 of the oldest keys survived"
