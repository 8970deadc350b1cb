"""RESP3 on the wire after ``HELLO 3``, checked byte for byte on a raw socket.

How: a raw socket sends HELLO 3 and the test asserts the exact encodings Redis 7 uses: the
HELLO reply is a ``%7`` map whose ``server`` is "meridian" (a documented difference; the field
names are the same as redis-server's, which the test checks by asking the reference server),
a missing key is ``_\\r\\n``, CONFIG GET is a map, MGET nulls are ``_`` inside an array;
``HELLO 2`` and ``RESET`` switch back to ``$-1``; unsupported versions get ``-NOPROTO``; and
redis-py ``protocol=3`` works end to end.
"""

from conftest import RawConnection, encode_command


def _map(reply):
    assert reply[0] == "map", f"expected a RESP3 map, got {reply!r}"
    return {k[1]: v for k, v in reply[1]}


def test_hello3_map_and_nulls(meridian, redis_server):
    with meridian.raw() as conn:
        conn.send(encode_command("HELLO", "3"))
        raw, reply = conn.read_reply()
        assert raw.startswith(b"%7\r\n")
        fields = _map(reply)
        assert fields[b"server"] == ("bulk", b"meridian")
        assert fields[b"proto"] == ("int", 3)
        assert fields[b"id"][0] == "int" and fields[b"id"][1] > 0
        assert fields[b"mode"] == ("bulk", b"standalone")
        assert fields[b"role"] == ("bulk", b"master")
        assert fields[b"modules"] == ("array", [])
        assert fields[b"version"][0] == "bulk"
        with RawConnection(redis_server.port) as ref:
            assert set(fields) == set(_map(ref.command("HELLO", "3"))), "HELLO field names differ from Redis"

        conn.send(encode_command("GET", "resp3:missing"))
        assert conn.read_reply()[0] == b"_\r\n"
        conn.send(encode_command("SET", "resp3:a", "1"))
        assert conn.read_reply()[0] == b"+OK\r\n"
        conn.send(encode_command("MGET", "resp3:a", "resp3:missing"))
        assert conn.read_reply()[0] == b"*2\r\n$1\r\n1\r\n_\r\n"
        conn.send(encode_command("CONFIG", "GET", "maxmemory"))
        assert conn.read_reply()[0] == b"%1\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n"
        conn.send(encode_command("GETDEL", "resp3:missing"))
        assert conn.read_reply()[0] == b"_\r\n"
        conn.send(encode_command("SET", "resp3:a", "2", "GET"))
        assert conn.read_reply()[0] == b"$1\r\n1\r\n"
        conn.send(encode_command("SET", "resp3:a", "3", "NX"))
        assert conn.read_reply()[0] == b"_\r\n"
        conn.send(encode_command("TTL", "resp3:a"))
        assert conn.read_reply()[0] == b":-1\r\n"

        # HELLO with no version answers in the current protocol
        conn.send(encode_command("HELLO"))
        assert conn.read_reply()[0].startswith(b"%7\r\n")

        conn.send(encode_command("HELLO", "2"))
        raw, reply = conn.read_reply()
        assert raw.startswith(b"*14\r\n") and b"meridian" in raw
        conn.send(encode_command("GET", "resp3:missing"))
        assert conn.read_reply()[0] == b"$-1\r\n"
        conn.send(encode_command("CONFIG", "GET", "maxmemory"))
        assert conn.read_reply()[0] == b"*2\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n"


def test_hello_errors_and_setname(meridian):
    with meridian.raw() as conn:
        assert conn.command("HELLO", "4") == ("error", b"NOPROTO unsupported protocol version")
        assert conn.command("HELLO", "1") == ("error", b"NOPROTO unsupported protocol version")
        assert conn.command("HELLO", "abc") == ("error", b"ERR Protocol version is not an integer or out of range")
        # still RESP2 after the failed handshakes
        conn.send(encode_command("GET", "nothing"))
        assert conn.read_reply()[0] == b"$-1\r\n"
        reply = conn.command("HELLO", "3", "SETNAME", "resp3-client")
        assert _map(reply)[b"proto"] == ("int", 3)
        assert conn.command("CLIENT", "GETNAME") == ("bulk", b"resp3-client")
        # RESET goes back to RESP2 and clears the name
        assert conn.command("RESET") == ("simple", b"RESET")
        conn.send(encode_command("CLIENT", "GETNAME"))
        assert conn.read_reply()[0] == b"$-1\r\n"


def test_redis_py_protocol_3(meridian):
    c = meridian.client(protocol=3)
    assert c.ping() is True
    assert c.get("missing") is None
    assert c.set("k", "v", ex=100) is True
    assert c.get("k") == "v"
    assert 99 <= c.ttl("k") <= 100
    assert c.config_get("maxmemory") == {"maxmemory": "0"}
    assert c.mget("k", "missing") == ["v", None]
    hello = c.execute_command("HELLO", "3")
    assert hello["server"] == "meridian" and hello["proto"] == 3
    assert c.incrbyfloat("f", 1.5) == 1.5
