"""Redis-semantics cases found by code review, diffed against redis-server: EXPIRETIME rounds
to the nearest second, SET and GETEX accept a repeated option (the last expiry wins) but refuse
conflicting ones, SETRANGE with an empty value needs no size check, INCRBYFLOAT's result is
never integer-encoded, and client bytes in error replies cannot forge extra replies.
"""

FAR_MS = 4102444800999  # 2100-01-01 00:00:00.999 UTC: the seconds round up


def test_expiretime_rounds_to_nearest_second(diff):
    d = diff
    d.cmd("SET", "k", "v")
    d.cmd("PEXPIREAT", "k", str(FAR_MS))
    d.cmd("EXPIRETIME", "k")
    d.cmd("PEXPIREAT", "k", str(FAR_MS - 600))
    d.cmd("EXPIRETIME", "k")
    d.cmd("PEXPIRETIME", "k")
    d.done()


def test_repeated_and_conflicting_options(diff):
    d = diff
    d.cmd("SET", "k", "v", "EX", "10", "EX", "20")
    d.cmd("TTL", "k", tol=1)
    d.cmd("SET", "k", "v", "EX", "abc", "EX", "30")
    d.cmd("TTL", "k", tol=1)
    d.cmd("SET", "k", "v", "NX", "NX")
    d.cmd("SET", "k", "v", "EX", "10", "PX", "100")
    d.cmd("SET", "k", "v", "EX", "10", "KEEPTTL")
    d.cmd("SET", "k", "v", "EX", "abc", "FOO")
    d.cmd("GETEX", "k", "PERSIST", "PERSIST")
    d.cmd("TTL", "k")
    d.cmd("GETEX", "k", "EX", "10", "EX", "30")
    d.cmd("TTL", "k", tol=1)
    d.cmd("GETEX", "k", "EX", "10", "PERSIST")
    d.cmd("GETEX", "k", "KEEPTTL")
    d.done()


def test_setrange_empty_value_and_incrbyfloat_encoding(diff):
    d = diff
    d.cmd("SETRANGE", "missing", "5000000", "")
    d.cmd("SET", "s", "abc")
    d.cmd("SETRANGE", "s", "5000000", "")
    d.cmd("SETRANGE", "s", "-1", "")
    d.cmd("INCRBYFLOAT", "f", "1")
    d.cmd("OBJECT", "ENCODING", "f")
    d.cmd("INCRBYFLOAT", "f", "1.5")
    d.cmd("OBJECT", "ENCODING", "f")
    d.cmd("INCR", "i")
    d.cmd("OBJECT", "ENCODING", "i")
    d.done()


def test_client_bytes_cannot_forge_replies(meridian):
    with meridian.raw() as raw:
        raw.send(b"*4\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n$18\r\nfoo\r\n+INJECTED\r\n:1\r\n$1\r\nx\r\n*1\r\n$4\r\nPING\r\n")
        first = raw.read_reply()[1]
        second = raw.read_reply()[1]
    assert first[0] == "error" and b"\r" not in first[1] and b"\n" not in first[1], first
    assert second == ("simple", b"PONG"), "the next reply must be PING's, not a forged one"
