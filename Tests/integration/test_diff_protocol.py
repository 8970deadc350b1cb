"""Differential tests below the command layer: inline commands, QUIT in a pipeline, the
keyspace_hits / keyspace_misses accounting of INFO stats, and null encodings.

How:
* Inline: the same raw bytes (inline commands with quoting, escapes, blank lines, bare LF,
  tabs, multi-byte UTF-8) followed by ``ECHO END`` are written to Meridian and to redis-server;
  every reply up to END (or the close) must be byte-identical.
* QUIT in the middle of a pipeline: both answer +OK to QUIT and run nothing after it.
* Hits/misses: after ``CONFIG RESETSTAT`` on both servers, each command of a sequence is run on
  both, and the change of keyspace_hits and keyspace_misses it causes is compared command by
  command (the failure lists every command whose accounting differs).
* COMMAND INFO of an unknown name: the null element must be encoded as Redis encodes it.
* INFO: every documented section (server clients memory persistence stats replication cpu
  keyspace) has the same ``# Header`` as Redis's and carries Redis's field names.
"""

import pytest

from conftest import RawConnection, encode_command

INLINE_CASES = [
    b"PING\r\n", b"  PING  \r\n", b"\r\nPING\r\n", b"PING\n", b"\r\n\r\n   \r\nPING\r\n",
    b'ECHO "a\\x41\\n\\t\\r\\b\\a"\r\n', b"ECHO 'it\\'s'\r\n", b'ECHO ""\r\n', b"ECHO ''\r\n",
    b'SET inl "a b"\r\nGET inl\r\n', b'ECHO "\\xZZ"\r\n', b"ECHO a\tb\r\n", b"set inl v ex 100\r\nttl inl\r\n",
    b'ECHO "\\\\"\r\n', b'ECHO "a\\"b"\r\n', b'ECHO "\\u00e9"\r\n', b"GET\r\n", b"NOPE a\r\n",
    b"ECHO \xc3\xa9\r\n", b"ECHO 'a\"b'\r\n", b'ECHO "it\'s"\r\n', b"MSET a 1 b 2\r\nMGET a b c\r\n",
    b'ECHO "a""b"\r\n', b"ECHO 'a'b\r\n", b"PING\r\nPING\rPING\r\n",
]


def _replies_until_end(port: int, data: bytes) -> list:
    out = []
    with RawConnection(port, timeout=2) as c:
        c.send(data + b"ECHO END\r\n")
        for _ in range(10):
            try:
                raw, _ = c.read_reply()
            except Exception as e:  # closed after a protocol error
                out.append(type(e).__name__)
                break
            out.append(raw)
            if raw == b"$3\r\nEND\r\n":
                break
    return out


@pytest.mark.parametrize("data", INLINE_CASES, ids=[repr(c)[2:30] for c in INLINE_CASES])
def test_inline_commands_match_redis(shared_meridian, redis_server, data):
    m = _replies_until_end(shared_meridian.port, data)
    r = _replies_until_end(redis_server.port, data)
    assert m == r, f"inline {data!r}\n  meridian: {m}\n  redis:    {r}"
    assert r, "no reply at all"


def test_quit_in_pipeline_matches_redis(shared_meridian, redis_server):
    for port in (shared_meridian.port, redis_server.port):
        with RawConnection(port) as c:
            c.command("DEL", "q")
            c.send(encode_command("SET", "q", "1") + encode_command("QUIT") + encode_command("SET", "q", "2"))
            assert c.read_replies(2) == [("simple", b"OK"), ("simple", b"OK")]
            assert c.is_closed_by_peer(3) and c.buf == b""
        with RawConnection(port) as c:
            assert c.command("GET", "q") == ("bulk", b"1"), port


HIT_MISS_SEQUENCE = [
    ("SET", "a", "1"), ("GET", "a"), ("GET", "nope"), ("MGET", "a", "nope", "a"), ("EXISTS", "a", "nope"),
    ("TTL", "a"), ("TTL", "nope"), ("PTTL", "a"), ("EXPIRETIME", "a"), ("TYPE", "a"), ("TYPE", "nope"),
    ("STRLEN", "a"), ("STRLEN", "nope"), ("GETRANGE", "a", "0", "1"), ("INCR", "a"), ("INCR", "new"),
    ("APPEND", "a", "x"), ("SET", "a", "2", "GET"), ("SET", "zz", "2", "GET"), ("GETSET", "a", "3"),
    ("GETSET", "fresh", "3"), ("GETDEL", "a"), ("GETDEL", "a"), ("GETEX", "new"), ("GETEX", "nope"),
    ("SETNX", "new", "1"), ("SET", "new", "1", "XX"), ("EXPIRE", "new", "100"), ("PERSIST", "new"),
    ("OBJECT", "ENCODING", "zz"), ("OBJECT", "ENCODING", "nope"), ("OBJECT", "IDLETIME", "zz"),
    ("TOUCH", "zz", "nope"), ("RENAME", "zz", "yy"), ("KEYS", "*"), ("SCAN", "0"), ("RANDOMKEY",),
    ("SETRANGE", "yy", "0", "a"), ("INCRBYFLOAT", "yy", "1"), ("DEL", "yy", "nope"),
]


def test_keyspace_hits_and_misses_match_redis(shared_meridian, redis_server):
    clients = {"meridian": shared_meridian.client(), "redis": redis_server.client()}
    for c in clients.values():
        c.flushdb()
        c.config_resetstat()

    def counters(c):
        s = c.info("stats")
        return s["keyspace_hits"], s["keyspace_misses"]

    differences = []
    for args in HIT_MISS_SEQUENCE:
        deltas = {}
        for name, c in clients.items():
            before = counters(c)
            try:
                c.execute_command(*args)
            except Exception:
                pass
            after = counters(c)
            deltas[name] = (after[0] - before[0], after[1] - before[1])
        if deltas["meridian"] != deltas["redis"]:
            differences.append(f"{' '.join(args)}: meridian (hits, misses) +{deltas['meridian']}, redis +{deltas['redis']}")
    assert counters(clients["redis"]) != (0, 0), "the sequence exercised no lookups"
    assert not differences, "keyspace_hits/keyspace_misses accounting differs from Redis:\n" + "\n".join(differences)


def test_command_info_unknown_name_null_encoding(shared_meridian, redis_server):
    for proto in ("2", "3"):
        replies = []
        for port in (shared_meridian.port, redis_server.port):
            with RawConnection(port) as c:
                c.command("HELLO", proto)
                c.send(encode_command("COMMAND", "INFO", "nosuchcommand"))
                replies.append(c.read_reply()[0])
        assert replies[0] == replies[1], f"RESP{proto}: meridian {replies[0]!r}, redis {replies[1]!r}"


INFO_SECTIONS = ["server", "clients", "memory", "persistence", "stats", "replication", "cpu", "keyspace"]
INFO_FIELDS = {
    "server": ["redis_version", "redis_mode", "process_id", "tcp_port", "uptime_in_seconds"],
    "clients": ["connected_clients"],
    "memory": ["used_memory", "used_memory_human", "maxmemory", "maxmemory_human", "maxmemory_policy"],
    "stats": ["total_connections_received", "total_commands_processed", "expired_keys", "evicted_keys",
              "keyspace_hits", "keyspace_misses"],
    "replication": ["role", "connected_slaves"],
}


def test_info_sections_and_fields_match_redis(shared_meridian, redis_server):
    """Each documented INFO section has Redis's header and Redis's field names."""
    import re
    problems = []
    for section in INFO_SECTIONS:
        texts = {}
        for name, port in (("meridian", shared_meridian.port), ("redis", redis_server.port)):
            with RawConnection(port) as c:
                kind, payload = c.command("INFO", section)
                assert kind == "bulk", (name, section, kind)
                texts[name] = payload.decode()
        headers = {n: re.findall(r"^# (\w+)", t, re.M) for n, t in texts.items()}
        if headers["meridian"] != headers["redis"]:
            problems.append(f"INFO {section}: headers {headers['meridian']} vs Redis {headers['redis']}")
        for field in INFO_FIELDS.get(section, []):
            for n, t in texts.items():
                if not re.search(rf"^{field}:", t, re.M):
                    problems.append(f"INFO {section}: {n} has no '{field}' field")
    with RawConnection(shared_meridian.port) as c:
        assert c.command("INFO", "nosuchsection") == ("bulk", b"")
    assert not problems, "\n".join(problems)
