"""Differential tests of the generic keyspace commands against a real redis-server.

How: as in test_diff_strings.py, the ``diff`` fixture sends each command to Meridian and to
redis-server (four transports: redis-py RESP2/RESP3, raw RESP2/RESP3) and records every reply
that differs, exact error strings included. Replies whose order is unspecified by Redis are
compared as sets: KEYS (``unordered=True``), SCAN (the set of keys after a full iteration; the
cursor values are implementation details and are not compared) and RANDOMKEY (any existing key).

Covered: DEL UNLINK EXISTS TYPE RENAME RENAMENX, EXPIRE PEXPIRE EXPIREAT PEXPIREAT with
NX XX GT LT, TTL PTTL EXPIRETIME PEXPIRETIME PERSIST, SCAN (MATCH COUNT TYPE), KEYS,
RANDOMKEY, OBJECT ENCODING / IDLETIME, DBSIZE, FLUSHDB, TOUCH, strict integer arguments, writes
over expired keys, 1000-key MSET/MGET. OBJECT FREQ is a documented difference and is checked
against Meridian's documentation instead of being diffed.
"""

import time

from conftest import _scan_parts

FAR_S = 4102444800  # 2100-01-01
FAR_MS = FAR_S * 1000 + 7


def test_del_unlink_exists_type_touch(diff):
    d = diff
    d.cmd("MSET", "a", "1", "b", "2", "c", "3", "d", "4")
    d.cmd("EXISTS", "a")
    d.cmd("EXISTS", "a", "a", "b", "missing")
    d.cmd("DEL", "a", "a", "missing")
    d.cmd("EXISTS", "a")
    d.cmd("UNLINK", "b", "c", "zzz")
    d.cmd("DEL", "missing")
    d.cmd("TYPE", "d")
    d.cmd("TYPE", "missing")
    d.cmd("TOUCH", "d", "missing", "d")
    d.cmd("DBSIZE")
    d.cmd("DEL")
    d.cmd("UNLINK")
    d.cmd("EXISTS")
    d.cmd("TYPE")
    d.cmd("TYPE", "a", "b")
    d.done()


def test_rename_renamenx(diff):
    d = diff
    d.cmd("SET", "src", "v", "EX", "100")
    d.cmd("RENAME", "src", "dst")
    d.cmd("EXISTS", "src")
    d.cmd("GET", "dst")
    d.cmd("TTL", "dst", tol=1)
    d.cmd("RENAME", "src", "dst")
    d.cmd("RENAMENX", "src", "dst")
    d.cmd("SET", "other", "o", "EX", "500")
    d.cmd("RENAME", "dst", "other")
    d.cmd("GET", "other")
    d.cmd("TTL", "other", tol=1)
    d.cmd("SET", "x", "1")
    d.cmd("RENAMENX", "x", "other")
    d.cmd("RENAMENX", "x", "fresh")
    d.cmd("GET", "fresh")
    d.cmd("TTL", "fresh")
    d.cmd("RENAME", "fresh", "fresh")
    d.cmd("RENAMENX", "fresh", "fresh")
    d.cmd("GET", "fresh")
    d.cmd("RENAME", "missing", "missing")
    d.cmd("RENAME", "fresh")
    d.cmd("RENAMENX", "a", "b", "c")
    d.cmd("DBSIZE")
    d.done()


def test_expire_family_basic(diff):
    d = diff
    d.cmd("SET", "k", "v")
    d.cmd("TTL", "k")
    d.cmd("PTTL", "k")
    d.cmd("EXPIRETIME", "k")
    d.cmd("PEXPIRETIME", "k")
    d.cmd("TTL", "missing")
    d.cmd("PTTL", "missing")
    d.cmd("EXPIRETIME", "missing")
    d.cmd("PEXPIRETIME", "missing")
    d.cmd("EXPIRE", "k", "100")
    d.cmd("TTL", "k", tol=1)
    d.cmd("PEXPIRE", "k", "200000")
    d.cmd("PTTL", "k", tol=250)
    d.cmd("EXPIREAT", "k", str(FAR_S))
    d.cmd("EXPIRETIME", "k")
    d.cmd("PEXPIRETIME", "k")
    d.cmd("PEXPIREAT", "k", str(FAR_MS))
    d.cmd("PEXPIRETIME", "k")
    d.cmd("EXPIRETIME", "k")
    d.cmd("PERSIST", "k")
    d.cmd("PERSIST", "k")
    d.cmd("PERSIST", "missing")
    d.cmd("TTL", "k")
    d.cmd("EXPIRE", "missing", "100")
    d.cmd("PEXPIRE", "missing", "100")
    d.cmd("EXPIREAT", "missing", str(FAR_S))
    # non-positive and past times delete the key
    d.cmd("SET", "a", "v")
    d.cmd("EXPIRE", "a", "0")
    d.cmd("EXISTS", "a")
    d.cmd("SET", "a", "v")
    d.cmd("PEXPIRE", "a", "-100")
    d.cmd("EXISTS", "a")
    d.cmd("SET", "a", "v")
    d.cmd("EXPIREAT", "a", "1")
    d.cmd("GET", "a")
    d.cmd("SET", "a", "v")
    d.cmd("PEXPIREAT", "a", "0")
    d.cmd("TTL", "a")
    d.cmd("DBSIZE")
    d.done()


def test_expire_errors(diff):
    d = diff
    d.cmd("SET", "k", "v")
    d.cmd("EXPIRE", "k", "abc")
    d.cmd("EXPIRE", "k", "1.5")
    d.cmd("PEXPIRE", "k", "")
    d.cmd("EXPIRE", "k", "9223372036854775807")
    d.cmd("EXPIRE", "k", "-9223372036854775808")
    d.cmd("PEXPIRE", "k", "9223372036854775807")
    d.cmd("EXPIREAT", "k", "9223372036854775807")
    d.cmd("TTL", "k")
    d.cmd("EXPIRE", "k", "100", "BOGUS")
    d.cmd("EXPIRE", "k", "100", "NX", "XX")
    d.cmd("EXPIRE", "k", "100", "GT", "LT")
    d.cmd("EXPIRE", "k", "100", "NX", "GT")
    d.cmd("PEXPIRE", "k", "100", "LT", "NX")
    d.cmd("EXPIRE", "k", "100", "XX", "GT")
    d.cmd("TTL", "k")
    d.cmd("EXPIRE", "k")
    d.cmd("PEXPIREAT", "k")
    d.cmd("TTL")
    d.cmd("PERSIST")
    d.cmd("EXPIRETIME", "a", "b")
    d.done()


def test_pexpireat_largest_time(diff):
    """PEXPIREAT takes absolute milliseconds: Redis accepts any value up to LLONG_MAX."""
    d = diff
    d.cmd("SET", "k", "v")
    d.cmd("PEXPIREAT", "k", "9223372036854775807")
    d.cmd("PEXPIRETIME", "k")
    d.cmd("EXISTS", "k")
    d.done()


def test_expire_nx_xx_gt_lt(diff):
    d = diff
    d.cmd("SET", "k", "v")
    d.cmd("EXPIRE", "k", "100", "XX")
    d.cmd("TTL", "k")
    d.cmd("EXPIRE", "k", "100", "GT")  # no TTL counts as infinite: not greater
    d.cmd("TTL", "k")
    d.cmd("EXPIRE", "k", "100", "LT")  # ... and anything is less than infinite
    d.cmd("TTL", "k", tol=1)
    d.cmd("EXPIRE", "k", "200", "NX")
    d.cmd("TTL", "k", tol=1)
    d.cmd("EXPIRE", "k", "200", "XX")
    d.cmd("TTL", "k", tol=1)
    d.cmd("EXPIRE", "k", "100", "GT")
    d.cmd("TTL", "k", tol=1)
    d.cmd("EXPIRE", "k", "300", "GT")
    d.cmd("TTL", "k", tol=1)
    d.cmd("EXPIRE", "k", "400", "LT")
    d.cmd("TTL", "k", tol=1)
    d.cmd("EXPIRE", "k", "50", "LT")
    d.cmd("TTL", "k", tol=1)
    d.cmd("PEXPIRE", "k", "40000", "xx", "lt")
    d.cmd("TTL", "k", tol=1)
    d.cmd("PEXPIRE", "k", "90000", "GT", "XX")
    d.cmd("TTL", "k", tol=1)
    d.cmd("EXPIREAT", "k", str(FAR_S), "GT")
    d.cmd("EXPIRETIME", "k")
    d.cmd("EXPIREAT", "k", str(FAR_S - 100), "GT")
    d.cmd("EXPIRETIME", "k")
    d.cmd("PEXPIREAT", "k", str(FAR_MS - 1000 * FAR_S // 2), "NX")
    d.cmd("PEXPIREAT", "k", str(FAR_S * 1000 - 5), "LT")
    d.cmd("PEXPIRETIME", "k")
    d.cmd("SET", "p", "v")
    d.cmd("EXPIREAT", "p", str(FAR_S), "XX")
    d.cmd("PEXPIREAT", "p", str(FAR_MS), "LT")
    d.cmd("PEXPIRETIME", "p")
    d.cmd("PERSIST", "p")
    d.cmd("PEXPIREAT", "p", str(FAR_MS), "GT")
    d.cmd("TTL", "p")
    d.cmd("EXPIRE", "missing", "10", "NX")
    d.cmd("EXPIRE", "missing", "10", "LT")
    # a past time under a condition: deletes only if the condition holds
    d.cmd("EXPIRE", "k", "-1", "GT")
    d.cmd("EXISTS", "k")
    d.cmd("EXPIRE", "k", "-1", "LT")
    d.cmd("EXISTS", "k")
    d.cmd("DBSIZE")
    d.done()


def test_expired_keys_are_invisible(diff):
    d = diff
    d.cmd("SET", "gone", "v", "PX", "30")
    d.cmd("SET", "gone2", "v", "PX", "30")
    d.cmd("SET", "stay", "v")
    d.cmd("PSETEX", "gone3", "30", "v")
    time.sleep(0.15)
    d.cmd("GET", "gone")
    d.cmd("EXISTS", "gone2")
    d.cmd("TTL", "gone3")
    d.cmd("KEYS", "*", unordered=True)
    d.cmp_scan()
    d.cmd("DBSIZE")
    d.cmd("RANDOMKEY")
    d.cmd("APPEND", "gone", "x")
    d.cmd("GET", "gone")
    d.cmd("INCR", "gone2")
    d.done()


def _populate(d):
    keys = []
    for i in range(120):
        keys += [f"user:{i}", f"u{i}"]
    for i in range(30):
        keys += [f"session:{i}:data", f"item-{i:03d}"]
    keys += ["hello", "hallo", "hxllo", "hllo", "heeeello", "a*b", "a?b", "a[b", "a\\b", "ab", "a]b",
             "x-y", "x^y", "X", "ÿkey", "-", "[", "]"]
    args = []
    for k in keys:
        args += [k, "v"]
    d.cmd("MSET", *args)
    d.cmd("SET", "n1", "12345")
    return keys


PATTERNS = [
    "*", "user:*", "user:1?", "user:1*", "u?", "u[0-9]", "u[0-9][0-9]", "*:data", "session:*:*",
    "h?llo", "h*llo", "h[ae]llo", "h[^e]llo", "h[!e]llo", "h[a-b]llo", "h[b-a]llo", "a\\*b", "a\\?b",
    "a\\[b", "a\\\\b", "a[*]b", "a[?]b", "a[\\]]b", "a]b", "[", "[a", "a[", "\\", "item-0[0-4]?",
    "*[0-9]", "*[^0-9]", "", "nomatch*", "?", "??", "X", "x", "ÿ*", "-", "[-]", "item-[]",
    "*a*a*", "*-*", "u1*0", "**", "*?", "[\\-]", "a[[]b", "x[\\^]y", "[^a]b", "user:[1-2][0-9]",
]


def test_keys_patterns(diff):
    d = diff
    d.cmd("KEYS", "*")
    _populate(d)
    for p in PATTERNS:
        d.cmd("KEYS", p, unordered=True)
    d.cmd("KEYS")
    d.cmd("KEYS", "a", "b")
    d.done()


def test_keys_range_closed_by_bracket(diff):
    """Redis's matcher reads `[a-]b` as the range a..']' (swapped to ']'..'a') followed by 'b'
    inside an unterminated class, so it matches the one-character key "]" and not "ab"."""
    d = diff
    d.cmd("MSET", "ab", "1", "]", "2", "-b", "3", "a", "4")
    d.cmd("KEYS", "[a-]b", unordered=True)
    d.done()


def test_scan_full_iteration(diff):
    d = diff
    d.cmp_scan()
    _populate(d)
    d.cmp_scan()
    d.cmp_scan("COUNT", "7")
    d.cmp_scan("COUNT", "1000")
    for p in ["user:*", "u?", "*:data", "h[ae]llo", "a\\*b", "nomatch*", "*"]:
        d.cmp_scan("MATCH", p)
        d.cmp_scan("MATCH", p, "COUNT", "3")
    d.cmp_scan("TYPE", "string")
    d.cmp_scan("TYPE", "STRING")
    d.cmp_scan("TYPE", "list")
    d.cmp_scan("TYPE", "hash")
    d.cmp_scan("MATCH", "user:1*", "TYPE", "string", "COUNT", "20")
    d.cmp_scan("count", "5", "match", "item-*")
    d.done()


def test_scan_errors(diff):
    d = diff
    d.cmd("SET", "a", "1")
    d.cmd("SCAN", "abc")
    d.cmd("SCAN", "1.5")
    d.cmd("SCAN", "0", "COUNT")
    d.cmd("SCAN", "0", "COUNT", "0")
    d.cmd("SCAN", "0", "COUNT", "-1")
    d.cmd("SCAN", "0", "COUNT", "abc")
    d.cmd("SCAN", "0", "MATCH")
    d.cmd("SCAN", "0", "TYPE")
    d.cmd("SCAN", "0", "BOGUS", "x")
    d.cmd("SCAN", "0", "MATCH", "*", "EXTRA")
    d.cmd("SCAN")
    d.cmd("SCAN", "0", "COUNT", "100")
    d.done()


def test_scan_negative_cursor(diff):
    """Redis parses the cursor with strtoul, so "-1" is accepted (as 2^64-1) and ends the scan."""
    d = diff
    d.cmd("SET", "a", "1")
    # Redis may or may not return "a" from that cursor; both must be a finished scan (cursor 0).
    d.cmd("SCAN", "-1", check=lambda m, r: _scan_parts(m)[0] == b"0" and _scan_parts(r)[0] == b"0")
    d.done()


def test_randomkey(diff):
    d = diff
    d.cmd("RANDOMKEY")
    d.cmd("SET", "only", "v")
    d.cmd("RANDOMKEY")
    d.cmd("MSET", "a", "1", "b", "2", "c", "3")
    members = {b"only", b"a", b"b", b"c"}

    def any_key(m, r):
        return _key_of(m) in members and _key_of(r) in members

    for _ in range(5):
        d.cmd("RANDOMKEY", check=any_key)
    d.cmd("RANDOMKEY", "x")
    d.done()


def _key_of(reply):
    if isinstance(reply, tuple) and reply and reply[0] == "bulk":
        return reply[1]
    return reply


def test_object_encoding_idletime(diff):
    d = diff
    values = {
        "int": "12345", "neg": "-42", "zero": "0", "lead0": "0123", "big": "12345678901234567890",
        "maxint": "9223372036854775807", "short": "abc", "e44": "e" * 44, "r45": "r" * 45, "long": "l" * 5000,
        "empty": "", "space": " 1", "float": "1.5",
    }
    for k, v in values.items():
        d.cmd("SET", k, v)
        d.cmd("OBJECT", "ENCODING", k)
    d.cmd("INCR", "counter")
    d.cmd("OBJECT", "ENCODING", "counter")
    d.cmd("INCRBYFLOAT", "fl", "1.5")
    d.cmd("OBJECT", "ENCODING", "fl")
    d.cmd("INCR", "lead0")
    d.cmd("OBJECT", "ENCODING", "missing")
    d.cmd("OBJECT", "IDLETIME", "short", tol=1)
    d.cmd("OBJECT", "IDLETIME", "missing")
    d.cmd("object", "encoding", "neg")
    d.cmd("OBJECT", "ENCODING")
    d.cmd("OBJECT", "IDLETIME")
    d.cmd("OBJECT", "ENCODING", "a", "b")
    d.cmd("OBJECT", "BOGUS", "k")
    d.cmd("OBJECT")
    d.done()


def test_object_encoding_after_append_setrange(diff):
    """Redis turns a string modified in place by APPEND or SETRANGE into a `raw` sds."""
    d = diff
    d.cmd("SET", "short", "abc")
    d.cmd("APPEND", "short", "d")
    d.cmd("OBJECT", "ENCODING", "short")
    d.cmd("SET", "int", "12345")
    d.cmd("APPEND", "int", "6")
    d.cmd("OBJECT", "ENCODING", "int")
    d.cmd("SET", "e44", "e" * 44)
    d.cmd("SETRANGE", "e44", "0", "x")
    d.cmd("OBJECT", "ENCODING", "e44")
    d.cmd("APPEND", "new", "abc")
    d.cmd("OBJECT", "ENCODING", "new")
    d.done()


def test_dbsize_flushdb_flushall(diff):
    d = diff
    d.cmd("DBSIZE")
    d.cmd("MSET", "a", "1", "b", "2", "c", "3")
    d.cmd("SET", "t", "1", "EX", "100")
    d.cmd("DBSIZE")
    d.cmd("FLUSHDB")
    d.cmd("DBSIZE")
    d.cmd("GET", "a")
    d.cmd("MSET", "a", "1", "b", "2")
    d.cmd("FLUSHDB", "ASYNC")
    d.cmd("DBSIZE")
    d.cmd("SET", "a", "1")
    d.cmd("FLUSHDB", "SYNC")
    d.cmd("KEYS", "*")
    d.cmd("SET", "a", "1")
    d.cmd("FLUSHALL")
    d.cmd("DBSIZE")
    d.cmd("FLUSHDB", "BOGUS")
    d.cmd("FLUSHDB", "ASYNC", "SYNC")
    d.cmd("FLUSHALL", "bogus")
    d.cmd("DBSIZE", "x")
    d.done()


def test_integer_argument_parsing(diff):
    """Redis parses integer arguments strictly (string2ll): no '+', no leading zeros or spaces."""
    d = diff
    d.cmd("SET", "k", "v")
    for bad in ["+10", "010", " 10", "10 ", "1e2", "0x10", "-", "", "٣"]:
        d.cmd("EXPIRE", "k", bad)
        d.cmd("SETEX", "s", bad, "v")
        d.cmd("SET", "s", "v", "EX", bad)
        d.cmd("GETRANGE", "k", bad, "1")
        d.cmd("SELECT", bad)
        d.cmd("INCRBY", "n", bad)
        d.cmd("SCAN", "0", "COUNT", bad)
    d.cmd("TTL", "k")
    d.cmd("EXISTS", "s", "n")
    d.cmd("GETRANGE", "k", "0", "9223372036854775807")
    d.cmd("GETRANGE", "k", "-9223372036854775808", "-1")
    d.cmd("GETRANGE", "k", "9223372036854775807", "9223372036854775807")
    d.cmd("SCAN", "0", "COUNT", "9223372036854775807", check=lambda m, r: _scan_parts(m) == _scan_parts(r))
    d.cmd("SCAN", "18446744073709551615", check=lambda m, r: _scan_parts(m)[0] == _scan_parts(r)[0] == b"0")
    d.cmd("SCAN", "18446744073709551616")
    d.cmd("EXPIRE", "k", "-0")
    d.cmd("EXISTS", "k")
    d.done()


def test_writes_over_expired_keys(diff):
    d = diff
    for k in ("e1", "e2", "e3", "e4", "e5", "e6", "e7"):
        d.cmd("SET", k, "old", "PX", "20")
    time.sleep(0.1)
    d.cmd("SET", "e1", "new", "XX")
    d.cmd("SETNX", "e2", "new")
    d.cmd("MSETNX", "e3", "new", "e4", "new")
    d.cmd("GETSET", "e5", "new")
    d.cmd("RENAME", "e6", "x")
    d.cmd("RENAMENX", "e6", "x")
    d.cmd("SET", "src", "v")
    d.cmd("RENAMENX", "src", "e7")
    d.cmd("MGET", "e1", "e2", "e3", "e4", "e5", "e6", "e7", "src")
    d.cmd("TTL", "e2")
    d.cmd("DBSIZE")
    d.done()


def test_many_keys_in_one_command(diff):
    d = diff
    args = []
    for i in range(1000):
        args += [f"many:{i}", str(i)]
    d.cmd("MSET", *args)
    d.cmd("MGET", *[f"many:{i}" for i in range(0, 1200)])
    d.cmd("EXISTS", *[f"many:{i}" for i in range(0, 1200, 3)])
    d.cmd("DEL", *[f"many:{i}" for i in range(0, 1000, 2)])
    d.cmd("DBSIZE")
    d.cmd("KEYS", "many:1??", unordered=True)
    d.done()


def test_object_freq_documented(meridian):
    """Documented difference: eviction is LRU, so OBJECT FREQ answers Redis's LFU error for an
    existing key (and a null for a missing one, as Redis does)."""
    with meridian.raw() as c:
        c.command("SET", "k", "v")
        assert c.command("OBJECT", "FREQ", "k") == ("error", (
            b"ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when "
            b"switching between policies at runtime LRU and LFU data will take some time to adjust."))
        assert c.command("OBJECT", "FREQ", "missing") == ("bulk", None)
        assert c.command("GET", "k") == ("bulk", b"v")
