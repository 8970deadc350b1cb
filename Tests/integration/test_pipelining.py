"""Pipelining: many commands in flight on one connection get every reply, in order.

How: (1) a redis-py pipeline of 1000 mixed commands (SET, GET, INCR, an unknown command and a
wrong-arity error in the middle) and a check of every result; (2) 1000 commands encoded by hand
and sent in a single ``sendall`` on a raw socket, then exactly 1000 replies parsed back and
compared one by one; (3) commands cut into single bytes and sent one byte per write (TCP_NODELAY,
with short pauses so they really arrive separately), in multibulk and inline form, which must be
answered exactly as if sent whole; (4) the same pipelines against redis-server to make sure
the expectations are Redis's.
"""

import socket
import time

import pytest
import redis

from conftest import RawConnection, encode_command


def test_redis_py_pipeline_1000_commands(meridian):
    c = meridian.client()
    pipe = c.pipeline(transaction=False)
    for i in range(400):
        pipe.set(f"p:{i}", f"value-{i}")
    for i in range(400):
        pipe.get(f"p:{i}")
    pipe.execute_command("NOSUCHCMD", "x")
    pipe.execute_command("GET")
    for _ in range(198):
        pipe.incr("p:counter")
    results = pipe.execute(raise_on_error=False)
    assert len(results) == 1000
    assert results[:400] == [True] * 400
    assert results[400:800] == [f"value-{i}" for i in range(400)]
    assert isinstance(results[800], redis.ResponseError)
    assert str(results[800]).startswith("unknown command 'NOSUCHCMD'")
    assert isinstance(results[801], redis.ResponseError)
    assert str(results[801]) == "wrong number of arguments for 'get' command"
    assert results[802:] == list(range(1, 199))
    assert c.dbsize() == 401
    assert c.ping() is True


def _big_batch():
    payload, expected = [], []
    for i in range(500):
        payload.append(encode_command("SET", f"raw:{i}", "x" * (i % 50)))
        expected.append(("simple", b"OK"))
    for i in range(499):
        payload.append(encode_command("GET", f"raw:{i}"))
        expected.append(("bulk", b"x" * (i % 50)))
    payload.append(encode_command("DBSIZE"))
    expected.append(("int", 500))
    return b"".join(payload), expected


def test_raw_socket_1000_commands_in_one_write(meridian, redis_server):
    payload, expected = _big_batch()
    for name, port in (("meridian", meridian.port), ("redis", redis_server.port)):
        if name == "redis":
            redis_server.client().flushdb()
        with RawConnection(port, timeout=10) as conn:
            conn.send(payload)
            replies = conn.read_replies(1000)
            bad = [(i, got, want) for i, (got, want) in enumerate(zip(replies, expected)) if got != want]
            assert not bad, f"{name}: {len(bad)} wrong replies, first: {bad[:3]}"
            assert conn.buf == b"", f"{name}: unexpected extra bytes {conn.buf[:80]!r}"
            assert conn.command("PING") == ("simple", b"PONG")


def test_raw_socket_inline_pipeline(meridian):
    payload = b"".join(b"SET inl:%d %d\r\n" % (i, i) for i in range(300)) + b"DBSIZE\r\nGET inl:299\n"
    with meridian.raw() as conn:
        conn.send(payload)
        replies = conn.read_replies(302)
        assert replies[:300] == [("simple", b"OK")] * 300
        assert replies[300] == ("int", 300)
        assert replies[301] == ("bulk", b"299")


def _send_byte_by_byte(conn: RawConnection, data: bytes, pause_every: int = 4) -> None:
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(len(data)):
        conn.send(data[i:i + 1])
        if i % pause_every == 0:
            time.sleep(0.001)


@pytest.mark.parametrize("target", ["meridian", "redis"])
def test_command_split_byte_by_byte(target, meridian, redis_server):
    port = meridian.port if target == "meridian" else redis_server.port
    with RawConnection(port, timeout=10) as conn:
        conn.command("DEL", "split", "split2")
        value = b"hello\r\nworld\x00" * 3
        data = encode_command("SET", "split", value) + encode_command("GET", "split")
        _send_byte_by_byte(conn, data)
        assert conn.read_reply() == (b"+OK\r\n", ("simple", b"OK"))
        assert conn.read_reply()[1] == ("bulk", value)
        # inline form, one byte at a time
        _send_byte_by_byte(conn, b"SET split2 \"a b\"\r\nGET split2\r\n")
        assert conn.read_replies(2) == [("simple", b"OK"), ("bulk", b"a b")]
        # a bulk length header split in the middle of its digits, then the rest in one write
        conn.send(b"*2\r\n$3\r\nGE")
        time.sleep(0.05)
        conn.send(b"T\r\n$")
        time.sleep(0.05)
        conn.send(b"5\r\nsplit\r")
        time.sleep(0.05)
        conn.send(b"\n")
        assert conn.read_reply()[1] == ("bulk", value)
        assert conn.command("PING") == ("simple", b"PONG")


def test_pipeline_interleaved_with_other_clients(meridian):
    """Two connections pipelining at once each get exactly their own replies."""
    a, b = meridian.raw(timeout=10), meridian.raw(timeout=10)
    try:
        a.send(b"".join(encode_command("ECHO", f"a{i}") for i in range(500)))
        b.send(b"".join(encode_command("ECHO", f"b{i}") for i in range(500)))
        ra, rb = a.read_replies(500), b.read_replies(500)
        assert ra == [("bulk", f"a{i}".encode()) for i in range(500)]
        assert rb == [("bulk", f"b{i}".encode()) for i in range(500)]
    finally:
        a.close()
        b.close()
