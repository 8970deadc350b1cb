"""CLIENT and CONFIG commands, and correctness under concurrent clients.

How:
* CLIENT ID is unique and increases in connection order (40 sequential connects); SETNAME/GETNAME round-trip and clear;
  CLIENT LIST shows every connection with its id, name and the peer address the test's own
  socket has (getsockname); CLIENT INFO is this connection's line; HELLO SETNAME and RESET act
  on the name.
* CONFIG GET maxmemory is 0 without a limit; CONFIG SET maxmemory 10mb is visible through CONFIG
  GET and INFO memory; a bad value is refused and changes nothing.
* 20 threads, each with its own connection, run 500 INCRs on one key (and 100 INCRBYs on
  another): the totals must be exact, so no increment is lost between the event loops.
* Atomicity as Redis gives it: one thread MSETs 8 keys (spread over shards) to the same value
  while two threads MGET them; no MGET may see a mix of values. 20 threads race SETNX on the
  same 50 keys; each key has exactly one winner, whose value is stored.
"""

import threading
import time

from conftest import RawConnection


def _fields(line: str) -> dict:
    return dict(part.split("=", 1) for part in line.strip().split(" "))


def test_client_id_name_list_info(meridian):
    a = meridian.raw()
    id_a = a.command("CLIENT", "ID")  # a round trip first: b is certainly accepted later
    b = meridian.raw()
    try:
        id_b = b.command("CLIENT", "ID")
        assert id_a[0] == id_b[0] == "int" and id_b[1] > id_a[1] > 0
        assert a.command("CLIENT", "GETNAME") == ("bulk", None)
        assert a.command("CLIENT", "SETNAME", "alpha") == ("simple", b"OK")
        assert b.command("CLIENT", "SETNAME", "beta") == ("simple", b"OK")
        assert a.command("CLIENT", "GETNAME") == ("bulk", b"alpha")
        assert b.command("CLIENT", "GETNAME") == ("bulk", b"beta")

        kind, listing = a.command("CLIENT", "LIST")
        assert kind == "bulk"
        rows = {int(f["id"]): f for f in map(_fields, listing.decode().strip().splitlines())}
        assert {id_a[1], id_b[1]} <= set(rows)
        for conn, cid, name in ((a, id_a[1], "alpha"), (b, id_b[1], "beta")):
            host, port = conn.sock.getsockname()
            assert rows[cid]["name"] == name
            assert rows[cid]["addr"] == f"{host}:{port}"
            assert rows[cid]["laddr"] == f"127.0.0.1:{meridian.port}"
            assert rows[cid]["db"] == "0"

        kind, info = a.command("CLIENT", "INFO")
        assert kind == "bulk" and info.endswith(b"\n") and info.count(b"\n") == 1
        mine = _fields(info.decode())
        assert int(mine["id"]) == id_a[1] and mine["name"] == "alpha" and mine["resp"] == "2"

        kind, only_b = a.command("CLIENT", "LIST", "ID", str(id_b[1]))
        assert [int(_fields(l)["id"]) for l in only_b.decode().strip().splitlines()] == [id_b[1]]

        assert a.command("CLIENT", "SETNAME", "") == ("simple", b"OK")
        assert a.command("CLIENT", "GETNAME") == ("bulk", None)
        assert a.command("CLIENT", "SETNAME", "has space")[0] == "error"
        b.command("HELLO", "3", "SETNAME", "gamma")
        assert b.command("CLIENT", "GETNAME") == ("bulk", b"gamma")
        assert _fields(b.command("CLIENT", "INFO")[1].decode())["resp"] == "3"
        assert b.command("RESET") == ("simple", b"RESET")
        assert b.command("CLIENT", "GETNAME") == ("bulk", None)
        assert b.command("CLIENT", "ID") == id_b, "RESET must not change the connection id"
    finally:
        a.close()
        b.close()
    with meridian.raw() as c:
        assert c.command("CLIENT", "ID")[1] > id_b[1]
    assert meridian.client().info("clients")["connected_clients"] >= 1


def test_client_ids_follow_connection_order(meridian):
    """Redis: "If the ID of a connection is greater than the ID of another connection, it is
    guaranteed that the second connection was established with the server at a later time."
    40 connections are opened one after the other (each connect() has returned before the
    next starts), then asked for their ids."""
    conns = [meridian.raw() for _ in range(40)]
    try:
        ids = [c.command("CLIENT", "ID")[1] for c in conns]
    finally:
        for c in conns:
            c.close()
    inversions = [(i, ids[i], ids[i + 1]) for i in range(len(ids) - 1) if ids[i + 1] <= ids[i]]
    assert not inversions, f"ids in connection order: {ids}"


def test_client_list_drops_closed_connections(meridian):
    keep = meridian.raw()
    gone = meridian.raw()
    gone_id = gone.command("CLIENT", "ID")[1]
    gone.close()
    from conftest import wait_for

    def gone_from_list():
        listing = keep.command("CLIENT", "LIST")[1].decode()
        return all(int(_fields(l)["id"]) != gone_id for l in listing.strip().splitlines())

    wait_for(gone_from_list, timeout=3, interval=0.05, what="closed connection to leave CLIENT LIST")
    keep.close()


def test_config_get_set_maxmemory(meridian):
    c = meridian.client()
    assert c.config_get("maxmemory") == {"maxmemory": "0"}
    assert c.info("memory")["maxmemory"] == 0
    assert c.config_set("maxmemory", "10mb") is True
    assert c.config_get("maxmemory") == {"maxmemory": "10485760"}
    mem = c.info("memory")
    assert mem["maxmemory"] == 10485760
    with RawConnection(meridian.port) as raw:
        err = raw.command("CONFIG", "SET", "maxmemory", "lots")
        assert err == ("error", b"ERR CONFIG SET failed (possibly related to argument 'maxmemory') - argument must be a memory value")
        assert raw.command("CONFIG", "SET", "maxmemory", "1gb") == ("simple", b"OK")
        assert raw.command("CONFIG", "GET", "maxmemory") == ("array", [("bulk", b"maxmemory"), ("bulk", b"1073741824")])
        assert raw.command("CONFIG", "SET", "maxmemory", "12345") == ("simple", b"OK")
    assert c.config_get("maxmemory") == {"maxmemory": "12345"}
    assert c.config_set("maxmemory", 0) is True
    assert c.set("k", "v" * 1000) is True


def test_concurrent_incr_exact_total(meridian):
    threads, per_thread = 20, 500
    errors = []
    barrier = threading.Barrier(threads)

    def worker(n):
        try:
            c = meridian.client()
            barrier.wait(10)
            for _ in range(per_thread):
                c.incr("shared:counter")
            for _ in range(100):
                c.incrby("shared:big", n)
            c.close()
        except Exception as e:  # reported below, the assertion names it
            errors.append(repr(e))

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
    assert not any(t.is_alive() for t in pool), "a client thread hung"
    assert not errors, errors
    c = meridian.client()
    assert int(c.get("shared:counter")) == threads * per_thread
    assert int(c.get("shared:big")) == 100 * sum(range(threads))
    assert c.info("stats")["total_commands_processed"] >= threads * (per_thread + 100)


def _run_threads(targets, timeout=60):
    errors = []

    def wrap(fn):
        def run():
            try:
                fn()
            except Exception as e:
                errors.append(repr(e))
        return run

    pool = [threading.Thread(target=wrap(fn)) for fn in targets]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout)
    assert not any(t.is_alive() for t in pool), "a client thread hung"
    return errors


def test_mset_is_atomic_for_concurrent_readers(meridian):
    """MSET over keys in different shards: a concurrent MGET never sees a half-applied MSET."""
    keys = [f"atom:{i}" for i in range(8)]
    meridian.client().mset({k: "0" for k in keys})
    torn = []
    stop = threading.Event()

    def writer():
        c = meridian.client()
        for i in range(1, 1500):
            c.mset({k: str(i) for k in keys})
        stop.set()

    def reader():
        c = meridian.client()
        deadline = time.monotonic() + 30
        for _ in range(100_000):
            if time.monotonic() > deadline:
                return
            values = c.mget(keys)
            if len(set(values)) != 1:
                torn.append(values)
                return
            if stop.is_set():
                return

    errors = _run_threads([writer, reader, reader])
    assert not errors, errors
    assert not torn, f"MGET saw a partially applied MSET: {torn[0]}"
    assert meridian.client().mget(keys) == ["1499"] * 8


def test_setnx_has_exactly_one_winner(meridian):
    winners = []
    barrier = threading.Barrier(20)

    def contender(n):
        def run():
            c = meridian.client()
            barrier.wait(10)
            for round_ in range(50):
                if c.setnx(f"race:{round_}", n):
                    winners.append((round_, n))
        return run

    errors = _run_threads([contender(n) for n in range(20)])
    assert not errors, errors
    rounds = sorted(r for r, _ in winners)
    assert rounds == list(range(50)), "each SETNX race must have exactly one winner"
    c = meridian.client()
    for r, n in winners:
        assert c.get(f"race:{r}") == str(n)
