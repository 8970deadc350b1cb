"""KEYS / SCAN MATCH cannot be turned into a denial of service.

How: 10,000 keys made of 200 'a's plus a 5-digit suffix are loaded; the pattern
``a*a*a*a*a*a*a*a*a*b`` (which makes a backtracking matcher explore a combinatorial number of
ways to split the run of 'a's before failing) is run through KEYS and through a full SCAN MATCH
iteration, each of which must finish in under 5 s and return nothing. The same pattern shape
ending in a real suffix must find exactly that key (so the fast answer is not an empty one by
accident), a PING on a second connection during the KEYS call must be answered, and a pattern
longer than 1024 bytes is refused with an error.
"""

import threading
import time

N = 10_000
PATHOLOGICAL = "a*a*a*a*a*a*a*a*a*b"


def _load(client):
    keys = ["a" * 200 + f"{i:05d}" for i in range(N)]
    pipe = client.pipeline(transaction=False)
    for start in range(0, N, 500):
        pipe.mset({k: "1" for k in keys[start:start + 500]})
    assert all(pipe.execute())
    assert client.dbsize() == N
    return keys


def test_pathological_keys_pattern_is_fast(meridian):
    c = meridian.client(socket_timeout=30)
    keys = _load(c)
    other = meridian.client(socket_timeout=30)
    ping_latency = []

    def ping_during():
        time.sleep(0.05)
        t = time.monotonic()
        other.ping()
        ping_latency.append(time.monotonic() - t)

    pinger = threading.Thread(target=ping_during)
    pinger.start()
    start = time.monotonic()
    result = c.keys(PATHOLOGICAL)
    elapsed = time.monotonic() - start
    pinger.join(30)
    assert result == []
    assert elapsed < 5.0, f"KEYS {PATHOLOGICAL} took {elapsed:.2f}s over {N} keys"
    assert ping_latency and ping_latency[0] < 5.0

    start = time.monotonic()
    assert c.keys("a*a*a*a*a*a*a*a*a*00001") == [keys[1]]
    assert sorted(c.keys("*a*a*a*a*a*a*a*a*a*000?")) == sorted(keys[:10])
    assert time.monotonic() - start < 5.0


def test_pathological_scan_match_is_fast(meridian):
    c = meridian.client(socket_timeout=30)
    keys = _load(c)
    start = time.monotonic()
    found, cursor, rounds = [], 0, 0
    for rounds in range(1, 100_000):
        cursor, batch = c.scan(cursor=cursor, match=PATHOLOGICAL, count=1000)
        found += batch
        if cursor == 0 or time.monotonic() - start > 10:
            break
    elapsed = time.monotonic() - start
    assert cursor == 0, "SCAN did not finish"
    assert found == []
    assert elapsed < 5.0, f"SCAN MATCH {PATHOLOGICAL} took {elapsed:.2f}s ({rounds} calls)"
    matched = set()
    cursor = 0
    deadline = time.monotonic() + 10
    for _ in range(100_000):
        cursor, batch = c.scan(cursor=cursor, match="a*a*a*a*a*a*a*a*a*0000?", count=1000)
        matched.update(batch)
        if cursor == 0 or time.monotonic() > deadline:
            break
    assert matched == set(keys[:10])


def test_overlong_pattern_refused(meridian):
    c = meridian.raw()
    c.command("SET", "a", "1")
    reply = c.command("KEYS", "a" * 1025)
    assert reply[0] == "error" and reply[1].startswith(b"ERR pattern too long"), reply
    reply = c.command("SCAN", "0", "MATCH", "a*" * 513)
    assert reply[0] == "error" and reply[1].startswith(b"ERR pattern too long"), reply
    assert c.command("KEYS", "*") == ("array", [("bulk", b"a")])
    c.close()
