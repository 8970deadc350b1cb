"""Differential tests of connection-level commands and of command-dispatch errors.

How: the ``diff`` fixture (see conftest.py) sends each command to Meridian and to a real
redis-server over four transports and records every differing reply; error strings must match
byte for byte. The reference redis-server runs with ``--databases 1`` so that ``SELECT 1`` is
refused by both (Meridian serves database 0 only). Replies that are inherently different
(TIME's clock) are checked for shape only.

Covered: PING ECHO SELECT 0/1, CONFIG GET/SET maxmemory (a map in RESP3; bad values, unknown
parameters, duplicate parameters, the name as spelled), CLIENT SETNAME/GETNAME/LIST argument
errors, TIME shape, wrong-arity errors for every supported command, unknown commands and unknown
subcommands (the connection must stay usable afterwards, which the following commands in the
same sequence prove).
"""


def test_ping_echo_select(diff):
    d = diff
    d.cmd("PING")
    d.cmd("PING", "hello")
    d.cmd("PING", "")
    d.cmd("ping", "a b")
    d.cmd("PING", "a", "b")
    d.cmd("ECHO", "hi")
    d.cmd("ECHO", "")
    d.cmd("ECHO", b"\x00\x01\r\n")
    d.cmd("ECHO")
    d.cmd("ECHO", "a", "b")
    d.cmd("SELECT", "0")
    d.cmd("SELECT", "1")
    d.cmd("SELECT", "-1")
    d.cmd("SELECT", "abc")
    d.cmd("SELECT", "99999999999999999999")
    d.cmd("SELECT")
    d.cmd("SELECT", "0", "1")
    d.cmd("SET", "k", "v")
    d.cmd("SELECT", "0")
    d.cmd("GET", "k")
    d.done()


def test_config_get_and_time_shape(diff):
    d = diff
    d.cmd("CONFIG", "GET", "maxmemory")
    d.cmd("CONFIG", "GET")
    d.cmd("CONFIG", "SET", "maxmemory")

    def two_numbers(m, r):
        def ok(reply):
            if isinstance(reply, tuple):  # raw
                return reply[0] == "array" and len(reply[1]) == 2 and all(
                    x[0] == "bulk" and x[1].isdigit() for x in reply[1])
            return isinstance(reply, list) and len(reply) == 2 and all(x.isdigit() for x in reply)
        return ok(m) and ok(r)

    d.cmd("TIME", check=two_numbers)
    d.cmd("TIME", "x")
    d.done()


ARITY_CASES = [
    ("GET",), ("GET", "a", "b"), ("SET", "k"), ("SETNX", "k"), ("SETEX", "k", "1"), ("PSETEX", "k", "1"),
    ("GETSET", "k"), ("GETDEL",), ("GETDEL", "a", "b"), ("GETEX",), ("MGET",), ("MSET",), ("MSET", "a"),
    ("MSETNX",), ("MSETNX", "a", "1", "b"), ("APPEND", "k"), ("STRLEN",), ("STRLEN", "a", "b"),
    ("GETRANGE", "k", "0"), ("SUBSTR", "k"), ("SETRANGE", "k", "0"), ("INCR",), ("DECR",), ("INCRBY", "k"),
    ("DECRBY", "k"), ("INCRBYFLOAT", "k"), ("INCR", "a", "b"), ("DEL",), ("UNLINK",), ("EXISTS",), ("TOUCH",),
    ("TYPE",), ("RENAME", "a"), ("RENAMENX", "a"), ("EXPIRE", "k"), ("PEXPIRE", "k"), ("EXPIREAT", "k"),
    ("PEXPIREAT", "k"), ("TTL",), ("PTTL", "a", "b"), ("EXPIRETIME",), ("PEXPIRETIME",), ("PERSIST",),
    ("PERSIST", "a", "b"), ("SCAN",), ("KEYS",), ("KEYS", "a", "b"), ("RANDOMKEY", "x"), ("DBSIZE", "x"),
    ("ECHO",), ("SELECT",), ("TIME", "x"), ("OBJECT",), ("CONFIG",), ("CLIENT",), ("get",), ("GeT", "a", "b"),
]


def test_wrong_arity_errors(diff):
    d = diff
    for args in ARITY_CASES:
        d.cmd(*args)
    d.cmd("SET", "still", "usable")
    d.cmd("GET", "still")
    d.done()


def test_subcommand_arity_and_unknown_subcommands(diff):
    d = diff
    d.cmd("OBJECT", "ENCODING")
    d.cmd("OBJECT", "IDLETIME")
    d.cmd("OBJECT", "NOPE", "k")
    d.cmd("object", "nope")
    d.cmd("CONFIG", "GET")
    d.cmd("CONFIG", "NOPE")
    d.cmd("CONFIG", "nope", "a", "b")
    d.cmd("CLIENT", "NOPE")
    d.cmd("CLIENT", "SETNAME")
    d.cmd("CLIENT", "GETNAME", "x")
    d.cmd("CLIENT", "ID", "x")
    d.cmd("CLIENT", "SETNAME", "has space")
    d.cmd("PING")
    d.done()


def test_unknown_commands(diff):
    d = diff
    d.cmd("NOSUCHCOMMAND")
    d.cmd("nosuchcommand", "a", "b")
    d.cmd("FOO", "x" * 200, "y")
    d.cmd("FOO", *[f"arg{i}" for i in range(40)])
    d.cmd("FOO", "with space", "quote'd")
    d.cmd("", raw_only=True)
    d.cmd("SET", "k", "v")
    d.cmd("GET", "k")
    d.cmd("PING")
    d.done()


def test_client_and_config_errors(diff):
    d = diff
    d.cmd("CLIENT", "GETNAME")
    d.cmd("CLIENT", "SETNAME", "alpha")
    d.cmd("CLIENT", "GETNAME")
    d.cmd("CLIENT", "SETNAME", "")
    d.cmd("CLIENT", "GETNAME")
    d.cmd("CLIENT", "SETNAME", "a\nb")
    d.cmd("CLIENT", "LIST", "TYPE", "bogus")
    d.cmd("CLIENT", "LIST", "BOGUS")
    d.cmd("CONFIG", "SET", "maxmemory", "abc")
    d.cmd("CONFIG", "SET", "maxmemory", "-1")
    d.cmd("CONFIG", "SET", "nosuch", "1")
    d.cmd("CONFIG", "GET", "nosuch")
    d.cmd("CONFIG", "SET", "maxmemory", "10mb")
    d.cmd("CONFIG", "GET", "maxmemory")
    d.cmd("CONFIG", "SET", "MAXMEMORY", "1GB")
    d.cmd("CONFIG", "GET", "maxmemory")
    d.cmd("CONFIG", "GET", "maxmemory", "maxmemory-samples", check=_same_pairs)
    d.cmd("CONFIG", "SET", "maxmemory", "0")
    d.cmd("CONFIG", "GET", "maxmemory")
    d.done()


def _same_pairs(m, r):
    """CONFIG GET with several names: Redis returns the pairs in dictionary order."""
    def pairs(reply):
        if isinstance(reply, dict):
            return set(reply.items())
        if isinstance(reply, tuple) and reply[0] == "map":
            return {(k, v) for k, v in reply[1]}
        if isinstance(reply, tuple) and reply[0] == "array":
            items = reply[1]
        else:
            items = reply
        return set(zip(items[::2], items[1::2]))
    return pairs(m) == pairs(r)


def test_client_list_non_numeric_id(diff):
    d = diff
    d.cmd("CLIENT", "LIST", "ID", "abc")
    d.done()


def test_config_get_echoes_the_requested_name(diff):
    """Redis 7 answers CONFIG GET with the parameter name as the client spelled it."""
    d = diff
    d.cmd("CONFIG", "GET", "MAXMEMORY")
    d.cmd("CONFIG", "GET", "MaxMemory")
    d.done()


def test_config_set_duplicate_parameter(diff):
    """Redis 7 refuses a CONFIG SET naming the same parameter twice, and changes nothing."""
    d = diff
    d.cmd("CONFIG", "SET", "maxmemory", "10mb", "maxmemory", "5mb")
    d.cmd("CONFIG", "GET", "maxmemory")
    d.cmd("CONFIG", "SET", "maxmemory", "0")
    d.done()
