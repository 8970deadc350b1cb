"""Expiry: lazy (on access) and active (background sampling every 100 ms).

How: lazy expiry writes keys with PX 50 and reads them after 150 ms: every read path (GET,
EXISTS, MGET, TTL, STRLEN, GETRANGE, INCR recreating from zero) must treat them as absent; 5000
keys expiring together are read back at once (before the 100 ms active cycle can reap them all)
and none may be returned. Active
expiry writes 2000 keys with PX 100 and then, without touching any key (DBSIZE and INFO do
not), polls DBSIZE until it reaches 0, which must happen within 2 s; INFO's expired_keys and the
namespace's ``expired=`` counter must then count exactly those keys. TTL/PTTL precision is
checked to the millisecond range, and keys with a long TTL must be left alone.
"""

import time

from conftest import wait_for


def test_lazy_expiry(meridian):
    c = meridian.client()
    c.set("lazy:a", "v", px=50)
    c.set("lazy:b", "12", px=50)
    c.psetex("lazy:c", 50, "v")
    c.set("lazy:keep", "v", px=60_000)
    assert c.get("lazy:a") == "v"
    time.sleep(0.15)
    assert c.get("lazy:a") is None
    assert c.exists("lazy:b") == 0
    assert c.mget("lazy:a", "lazy:b", "lazy:c", "lazy:keep") == [None, None, None, "v"]
    assert c.ttl("lazy:c") == -2
    assert c.strlen("lazy:c") == 0
    assert c.getrange("lazy:c", 0, -1) == ""
    assert c.incr("lazy:b") == 1  # the expired "12" is gone, so INCR starts from 0
    assert c.ttl("lazy:b") == -1
    assert c.get("lazy:keep") == "v"
    assert c.info("stats")["expired_keys"] >= 3


def test_lazy_expiry_of_many_keys_before_active_cycle_reaps_them(meridian):
    """5000 keys expire at once; reading them right away exercises the on-access path, since
    one active cycle cannot have reaped them all yet."""
    c = meridian.client()
    pipe = c.pipeline(transaction=False)
    for i in range(5000):
        pipe.set(f"many:{i}", "v", px=40)
    pipe.execute()
    time.sleep(0.06)
    values = c.mget([f"many:{i}" for i in range(5000)])
    assert values == [None] * 5000, f"{5000 - values.count(None)} expired keys were returned"
    assert c.exists(*[f"many:{i}" for i in range(100)]) == 0


def test_active_expiry_without_access(meridian):
    c = meridian.client()
    pipe = c.pipeline(transaction=False)
    for i in range(2000):
        pipe.set(f"act:{i}", "v", px=100)
    for i in range(10):
        pipe.set(f"stay:{i}", "v", ex=3600)
    assert pipe.execute() == [True] * 2010
    # (some may already be reaped if writing them took longer than 100 ms on a busy machine)
    assert 10 < c.dbsize() <= 2010
    start = time.monotonic()
    wait_for(lambda: c.dbsize() == 10, timeout=2.0, interval=0.05, what="active expiry to remove 2000 keys")
    elapsed = time.monotonic() - start
    stats = c.info("stats")
    assert stats["expired_keys"] == 2000, stats["expired_keys"]
    assert stats["keyspace_hits"] == 0 and stats["keyspace_misses"] == 0, "the test must not have touched the keys"
    ns = c.info("keyspace")["ns_default"]
    assert ns["expired"] == 2000 and ns["keys"] == 10 and ns["expires"] == 10
    assert sorted(c.keys("*")) == sorted(f"stay:{i}" for i in range(10))
    assert elapsed < 2.0


def test_ttl_precision(meridian):
    c = meridian.client()
    c.set("p", "v", px=1500)
    pttl = c.pttl("p")
    assert 1300 <= pttl <= 1500, pttl
    assert c.ttl("p") in (1, 2)  # rounded like Redis: (ms + 500) / 1000
    c.pexpire("p", 2500)
    assert 2300 <= c.pttl("p") <= 2500
    at = int(time.time() * 1000) + 10_000
    c.pexpireat("p", at)
    assert c.pexpiretime("p") == at
    assert c.expiretime("p") == (at + 500) // 1000  # rounded like Redis, as TTL is
    c.pexpireat("p", 4102444800499)
    assert c.expiretime("p") == 4102444800  # .499 s rounds down...
    c.pexpireat("p", 4102444800500)
    assert c.expiretime("p") == 4102444801  # ...and .500 s up, whatever the wall clock
    c.set("short", "v", px=200)
    time.sleep(0.1)
    remaining = c.pttl("short")
    assert 0 < remaining <= 120, remaining
    time.sleep(0.15)
    assert c.pttl("short") == -2


def test_expired_counters_per_namespace(meridian):
    c = meridian.client()
    c.set("x1", "v", px=20)
    c.set("x2", "v", px=20)
    c.set("x3", "v")
    time.sleep(0.1)
    assert c.get("x1") is None  # lazy
    wait_for(lambda: c.dbsize() == 1, timeout=2.0, what="active expiry of x2")
    assert c.info("stats")["expired_keys"] == 2
    assert c.info("keyspace")["ns_default"]["expired"] == 2
