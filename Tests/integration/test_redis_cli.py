"""The stock Redis tools work against Meridian: redis-cli (plain, --raw, --no-raw, RESP3, stdin
scripts, info) and a short redis-benchmark run.

How: the real ``redis-cli`` binary is run as a subprocess (bounded by a timeout) against a fresh
meridian-server; its output for a command script is compared with the output of the same script
against redis-server, and Meridian-specific output (HELLO's server field, INFO namespace lines)
is checked directly. ``redis-benchmark -t set,get -n 2000 -P 16`` must finish and leave the
keyspace readable.
"""

import subprocess

import pytest


def cli(port, *args, stdin=None, timeout=15):
    result = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args], input=stdin,
                            capture_output=True, text=True, timeout=timeout)
    return result.returncode, result.stdout, result.stderr


def test_redis_cli_basic(meridian):
    p = meridian.port
    assert cli(p, "set", "k", "v") == (0, "OK\n", "")
    assert cli(p, "get", "k") == (0, "v\n", "")
    assert cli(p, "--raw", "get", "k") == (0, "v\n", "")
    assert cli(p, "--no-raw", "get", "k") == (0, '"v"\n', "")
    assert cli(p, "--no-raw", "get", "missing") == (0, "(nil)\n", "")
    assert cli(p, "--no-raw", "incr", "n") == (0, "(integer) 1\n", "")
    assert cli(p, "--no-raw", "nosuchcmd", "x")[1] == "(error) ERR unknown command 'nosuchcmd', with args beginning with: 'x' \n"
    rc, out, _ = cli(p, "info")
    assert rc == 0 and "# Server" in out and "# Keyspace" in out and "ns_default:keys=2" in out
    rc, out, _ = cli(p, "info", "memory")
    assert rc == 0 and "used_memory:" in out and "maxmemory:" in out and "# Server" not in out


def test_redis_cli_resp3_hello(meridian):
    rc, out, err = cli(meridian.port, "-3", "hello", "3")
    assert rc == 0, err
    lines = out.splitlines()
    assert "server meridian" in lines
    assert "proto 3" in lines
    rc, out, _ = cli(meridian.port, "-3", "--no-raw", "get", "missing")
    assert (rc, out) == (0, "(nil)\n")
    rc, out, _ = cli(meridian.port, "-3", "--no-raw", "config", "get", "maxmemory")
    assert rc == 0 and out == '1# "maxmemory" => "0"\n'


SCRIPT = """\
set a 1
get a
incr a
append a xyz
strlen a
getrange a 0 1
set b hello EX 100
ttl b
mset x 1 y 2
mget x y nope
exists a b x nope
del x y
type a
type nope
expire a 50 NX
persist a
set c 5 XX
incrbyfloat f 2.5
rename a a2
renamenx b a2
getdel b
dbsize
ping
echo "quoted value"
nosuch
get
select 1
"""


@pytest.mark.parametrize("mode", [[], ["--no-raw"], ["-3", "--no-raw"]], ids=["raw", "no-raw", "resp3"])
def test_redis_cli_script_matches_redis(meridian, redis_server, mode):
    redis_server.client().flushdb()
    rc_m, out_m, err_m = cli(meridian.port, *mode, stdin=SCRIPT)
    rc_r, out_r, err_r = cli(redis_server.port, *mode, stdin=SCRIPT)
    assert rc_m == rc_r == 0, (err_m, err_r)
    assert out_m.splitlines() == out_r.splitlines()
    assert len(out_m.splitlines()) >= 27


def test_redis_benchmark_smoke(meridian):
    result = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(meridian.port), "-t", "set,get",
                             "-n", "2000", "-c", "10", "-P", "16", "-q"], capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    assert "SET:" in result.stdout and "GET:" in result.stdout
    c = meridian.client()
    assert len(c.get("key:__rand_int__")) == 3  # -d defaults to 3 bytes
    assert c.info("stats")["total_commands_processed"] >= 4000
