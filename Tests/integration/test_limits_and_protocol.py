"""Hard limits and bad input: oversize keys/values, malformed RESP frames, unknown commands.

How: raw sockets, so that exact reply bytes and connection closes are observable.
* Oversize keys (> 256 bytes), empty keys and values > 1 MiB are refused with Meridian's
  documented errors through every write path (SET, MSET, APPEND, SETRANGE, GETSET, SETEX,
  RENAME...), nothing is stored (DBSIZE and the previous value are unchanged), and the same
  connection keeps working. The boundaries (256-byte key, 1 MiB value) are accepted.
* Each malformed frame is sent on a connection that first made an acknowledged write; the frame
  must get its exact ``-ERR Protocol error: ...`` line and then the connection must be closed by
  the server, while a second, already-open connection stays usable and reads the acknowledged
  write. Frames that Redis also rejects are sent to redis-server too and the errors compared.
  Meridian's own bounds (multibulk count > 1 Mi, bulk > 8 MiB, 64 MiB query buffer) are checked
  against docs/COMMANDS.md.
* An unknown command gets the unknown-command error and the connection stays usable.
"""

import pytest

from conftest import RawConnection, encode_command

KEY_TOO_LONG = ("error", b"ERR key too long (max 256 bytes)")
EMPTY_KEY = ("error", b"ERR empty keys are not allowed")
VALUE_TOO_LARGE = ("error", b"ERR value too large (max 1048576 bytes)")
MIB = 1048576


def test_key_length_limits(meridian):
    with meridian.raw(timeout=10) as c:
        k256, k257 = "k" * 256, "k" * 257
        assert c.command("SET", k256, "v") == ("simple", b"OK")
        assert c.command("GET", k256) == ("bulk", b"v")
        assert c.command("SET", "a", "1") == ("simple", b"OK")
        for args in [("SET", k257, "v"), ("GET", k257), ("SETNX", k257, "v"), ("SETEX", k257, "10", "v"),
                     ("APPEND", k257, "v"), ("INCR", k257), ("MSET", "b", "2", k257, "v"), ("RENAME", "a", k257),
                     ("GETSET", k257, "v"), ("EXPIRE", k257, "10"), ("DEL", k257)]:
            assert c.command(*args) == KEY_TOO_LONG, args
            assert c.command("PING") == ("simple", b"PONG")
        for args in [("SET", "", "v"), ("GET", ""), ("MSET", "b", "2", "", "v"), ("INCR", ""), ("RENAME", "a", "")]:
            assert c.command(*args) == EMPTY_KEY, args
        assert c.command("DBSIZE") == ("int", 2)
        assert c.command("GET", "a") == ("bulk", b"1")
        assert c.command("EXISTS", "b") == ("int", 0)
        assert c.command("KEYS", "*") in (("array", [("bulk", k256.encode()), ("bulk", b"a")]),
                                          ("array", [("bulk", b"a"), ("bulk", k256.encode())]))


def test_value_length_limits(meridian):
    with meridian.raw(timeout=20) as c:
        exact, over = b"v" * MIB, b"v" * (MIB + 1)
        assert c.command("SET", "exact", exact) == ("simple", b"OK")
        assert c.command("STRLEN", "exact") == ("int", MIB)
        assert c.command("SET", "keep", "old") == ("simple", b"OK")
        for args in [("SET", "keep", over), ("SET", "new", over), ("SETNX", "new", over), ("SETEX", "new", "10", over),
                     ("PSETEX", "new", "10000", over), ("GETSET", "keep", over), ("SET", "keep", over, "GET"),
                     ("MSET", "new", "1", "keep", over), ("MSETNX", "new", "1", "new2", over),
                     ("APPEND", "exact", "x"), ("SETRANGE", "exact", str(MIB), "x"),
                     ("SETRANGE", "keep", "2000000", "x"), ("APPEND", "new", over),
                     ("SET", "new", b"z" * (8 * MIB))]:  # the largest bulk the parser accepts
            assert c.command(*args) == VALUE_TOO_LARGE, [a[:12] for a in args]
            assert c.command("PING") == ("simple", b"PONG")
        assert c.command("GET", "keep") == ("bulk", b"old")
        assert c.command("STRLEN", "exact") == ("int", MIB)
        assert c.command("EXISTS", "new", "new2") == ("int", 0)
        assert c.command("DBSIZE") == ("int", 2)
        # growing right up to the limit is fine
        assert c.command("SET", "grow", b"x" * (MIB - 1)) == ("simple", b"OK")
        assert c.command("APPEND", "grow", "y") == ("int", MIB)
        assert c.command("SETRANGE", "grow", str(MIB - 1), "z") == ("int", MIB)
    assert "used_memory" in meridian.client().info("memory")


def test_pattern_length_limit(meridian):
    with meridian.raw() as c:
        c.command("SET", "a", "1")
        for args in [("KEYS", "a" * 1025), ("SCAN", "0", "MATCH", "*" * 1025)]:
            reply = c.command(*args)
            assert reply[0] == "error" and reply[1].startswith(b"ERR pattern too long"), reply
            assert c.command("PING") == ("simple", b"PONG")
        assert c.command("KEYS", "a") == ("array", [("bulk", b"a")])


def test_pattern_naming_a_longest_key_literally(meridian):
    """A key may be 256 bytes, so KEYS/SCAN MATCH with that key spelled out (256 literal bytes,
    well under the documented 1024-byte pattern bound) must find it."""
    key = "p" * 256
    with meridian.raw() as c:
        assert c.command("SET", key, "v") == ("simple", b"OK")
        assert c.command("KEYS", key) == ("array", [("bulk", key.encode())])
        assert c.command("KEYS", key[:250] + "*") == ("array", [("bulk", key.encode())])


def test_unknown_command_keeps_connection(meridian):
    with meridian.raw() as c:
        assert c.command("SET", "x", "1") == ("simple", b"OK")
        assert c.command("FLURB", "a", "b") == ("error", b"ERR unknown command 'FLURB', with args beginning with: 'a' 'b' ")
        assert c.command("LPUSH", "l", "1") == ("error", b"ERR unknown command 'LPUSH', with args beginning with: 'l' '1' ")
        c.send(b"NOPE\r\n")
        assert c.read_reply()[1] == ("error", b"ERR unknown command 'NOPE', with args beginning with: ")
        assert c.command("GET", "x") == ("bulk", b"1")


# Frames Redis rejects in the same way: (name, bytes, exact error line).
SHARED_MALFORMED = [
    ("multibulk-not-a-number", b"*abc\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    ("multibulk-empty-count", b"*\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    ("bulk-not-a-number", b"*1\r\n$abc\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    ("bulk-negative", b"*1\r\n$-3\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    ("bulk-1GiB", b"*1\r\n$1073741824\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    ("integer-instead-of-bulk", b"*1\r\n:x\r\n", b"-ERR Protocol error: expected '$', got ':'\r\n"),
    ("simple-instead-of-bulk", b"*2\r\n$3\r\nGET\r\n+x\r\n", b"-ERR Protocol error: expected '$', got '+'\r\n"),
    ("inline-over-64KiB", b"a" * 70000, b"-ERR Protocol error: too big inline request\r\n"),
    ("inline-unbalanced-double-quote", b'SET "abc\r\n', b"-ERR Protocol error: unbalanced quotes in request\r\n"),
    ("inline-unbalanced-single-quote", b"SET 'abc\r\n", b"-ERR Protocol error: unbalanced quotes in request\r\n"),
    ("inline-quote-not-followed-by-space", b'SET "a"b c\r\n', b"-ERR Protocol error: unbalanced quotes in request\r\n"),
]

# Meridian's own, tighter bounds (docs/COMMANDS.md), checked without a Redis comparison.
MERIDIAN_MALFORMED = [
    ("multibulk-over-1Mi-args", b"*1048577\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    ("multibulk-huge", b"*99999999999\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    ("bulk-over-8MiB", b"*2\r\n$3\r\nSET\r\n$8388609\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
]


def _check_malformed(port: int, name: str, frame: bytes, expected: bytes) -> None:
    witness = RawConnection(port)  # opened before the bad frame, must stay usable
    bad = RawConnection(port)
    try:
        assert bad.command("SET", f"ack:{name}", "acknowledged") == ("simple", b"OK")
        try:
            bad.send(frame)
        except (BrokenPipeError, ConnectionResetError):
            pass
        closed = bad.is_closed_by_peer(timeout=3)
        assert bad.buf == expected, f"{name}: got {bad.buf[:200]!r}, expected {expected!r}"
        assert closed, f"{name}: connection left open after the protocol error"
        assert witness.command("PING") == ("simple", b"PONG"), name
        assert witness.command("GET", f"ack:{name}") == ("bulk", b"acknowledged"), name
    finally:
        bad.close()
        witness.close()
    with RawConnection(port) as fresh:
        assert fresh.command("GET", f"ack:{name}") == ("bulk", b"acknowledged")


@pytest.mark.parametrize("name,frame,expected", SHARED_MALFORMED, ids=[m[0] for m in SHARED_MALFORMED])
def test_malformed_frame_meridian(meridian, name, frame, expected):
    _check_malformed(meridian.port, name, frame, expected)


def test_malformed_frames_match_redis(redis_server):
    """The expectations above are Redis's own replies (guards the test data itself)."""
    for name, frame, expected in SHARED_MALFORMED:
        _check_malformed(redis_server.port, name, frame, expected)


@pytest.mark.parametrize("name,frame,expected", MERIDIAN_MALFORMED, ids=[m[0] for m in MERIDIAN_MALFORMED])
def test_malformed_frame_meridian_bounds(meridian, name, frame, expected):
    _check_malformed(meridian.port, name, frame, expected)


def test_commands_before_a_protocol_error_are_executed(meridian):
    with meridian.raw() as c, meridian.raw() as other:
        c.send(encode_command("SET", "before", "1") + encode_command("INCR", "before") + b"*1\r\n$x\r\n"
               + encode_command("SET", "after", "1"))
        assert c.is_closed_by_peer(timeout=3)
        assert c.buf == b"+OK\r\n:2\r\n-ERR Protocol error: invalid bulk length\r\n"
        assert other.command("GET", "before") == ("bulk", b"2")
        assert other.command("EXISTS", "after") == ("int", 0)


def test_query_buffer_limit(meridian):
    """An unfinished command may buffer at most 64 MiB (9 bulks of 8 MiB exceed it)."""
    with meridian.raw(timeout=10) as c, meridian.raw() as other:
        chunk = b"$8388608\r\n" + b"x" * 8388608 + b"\r\n"
        try:
            c.sock.sendall(b"*10\r\n$3\r\nSET\r\n" + chunk * 9)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert c.is_closed_by_peer(timeout=5)
        assert c.buf.startswith(b"-ERR Protocol error: query buffer limit exceeded"), c.buf[:200]
        assert other.command("PING") == ("simple", b"PONG")
