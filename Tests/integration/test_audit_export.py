"""Audit export (docs/AUDIT.md) from real processes: two full data centers and a witness on
loopback ports chosen here, an audited durable namespace and a memory one.

What it proves: an export from east holds exactly the changes the workload made — east's own
sets, TTL changes, counter increments and deletes in order; west's, as east applied them; one
conflict line per conflict east counted; nothing of the memory namespace and nothing for a key
that merely expired — and `meridian audit verify` accepts it; DuckDB reads the compressed file
directly and its counts match the trailer; a second export resumed from the first's trailer
holds only what came after and the pair verifies; digest-only exports carry digests; an export
larger than one reply spans several frames, and a paced one is the same file, no faster than
its rate; a line dropped, swapped or changed, or a truncated
file, in a real export is refused with the line named; clear errors for bad requests.
"""
from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import threading
import time
from pathlib import Path

import duckdb
import pytest
import redis

from conftest import MERIDIAN_SERVER, client_for, wait_for
from test_peer_links import Cluster, linked

MERIDIAN = str(Path(MERIDIAN_SERVER).with_name("meridian"))

AUDITED = (
    "  - { name: default, prefix: \"\", durability: write-back }\n"
    "  - { name: cache, prefix: \"cache:\", durability: memory }\n"
)


@pytest.fixture
def cluster(tmp_path):
    made = Cluster(tmp_path, namespaces=AUDITED)
    for node in ("central-w", "east-1", "west-1"):
        made.start(node)
    wait_for(lambda: linked(made, "east-1", "west") and linked(made, "west-1", "east"), timeout=15, what="east-west link")
    yield made
    made.stop_all()


def export(cluster: Cluster, out: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    run = subprocess.run([MERIDIAN, "export", "--node", f"127.0.0.1:{cluster.ports['east-client']}", "--out", str(out), *args],
                         capture_output=True, text=True, timeout=120)
    if check:
        assert run.returncode == 0, run.stderr
    return run


def verify(*files: Path) -> subprocess.CompletedProcess:
    return subprocess.run([MERIDIAN, "audit", "verify", *map(str, files)], capture_output=True, text=True, timeout=120)


def lines_of(path: Path) -> list[dict]:
    plain = subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
    return [json.loads(line) for line in plain.decode().splitlines()]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str | None) -> str | None:
    return None if text is None else base64.b64decode(text).decode()


def deltas(lines: list[dict], origin: str | None = None, keys: set[str] | None = None) -> list[tuple]:
    """(key, op, value, counter, has expiry) of each delta, in file order."""
    return [(unb64(l["key"]), l["op"], unb64(l["value"]), l["counter"], l["expiry"] is not None)
            for l in lines if l["type"] == "delta" and (origin is None or l["origin_dc"] == origin)
            and (keys is None or unb64(l["key"]) in keys)]


def conflicts_counted_by_east(cluster: Cluster) -> int:
    return cluster.replication("east-1")["peer_west"]["conflicts"]


def test_an_export_holds_exactly_what_the_workload_did(cluster, tmp_path):
    east = client_for(cluster.ports["east-client"])
    west = client_for(cluster.ports["west-client"])
    started_ms = int(time.time() * 1000)

    # East's own changes, one line each, in order.
    east.set("a:1", "one")
    east.set("a:1", "uno")
    east.set("a:2", "two", ex=1000)
    east.expire("a:1", 500)
    east.persist("a:1")
    for _ in range(3):
        east.incr("c:1")
    east.incrby("c:1", 10)
    east.delete("a:2")
    east.set("cache:x", "memory namespaces are not audited")
    east.set("t:short", "expires by itself", px=200)
    wait_for(lambda: east.exists("t:short") == 0, timeout=5, what="t:short expired")
    expected_east = [
        ("a:1", "set", "one", None, False), ("a:1", "set", "uno", None, False), ("a:2", "set", "two", None, True),
        ("a:1", "expire", "uno", None, True), ("a:1", "expire", "uno", None, False),
        ("c:1", "counter", "1", "1", False), ("c:1", "counter", "2", "2", False), ("c:1", "counter", "3", "3", False),
        ("c:1", "counter", "13", "13", False), ("a:2", "delete", None, None, False), ("t:short", "set", "expires by itself", None, True),
    ]
    # West's changes, each applied in east before the next is made.
    wait_for(lambda: west.get("c:1") == "13", timeout=10, what="east's counter in west")
    west.set("w:1", "from west")
    wait_for(lambda: east.get("w:1") == "from west", timeout=10, what="w:1 in east")
    west.incr("c:1")
    wait_for(lambda: east.get("c:1") == "14", timeout=10, what="west's increment in east")
    west.delete("w:1")
    wait_for(lambda: east.exists("w:1") == 0, timeout=10, what="west's delete in east")
    expected_west = [("w:1", "set", "from west", None, False), ("c:1", "counter", "14", "14", False), ("w:1", "delete", None, None, False)]

    # Concurrent writes to the same keys from both sides: conflicts.
    hot = [f"h:{i}" for i in range(10)]
    barrier = threading.Barrier(2)
    acknowledged = {"east": 0}

    def hammer(client: redis.Redis, side: str):
        barrier.wait()
        for round_ in range(20):
            pipe = client.pipeline(transaction=False)
            for key in hot:
                pipe.set(key, f"{side}-{round_}")
            replies = pipe.execute()
            if side == "east":
                acknowledged["east"] += sum(1 for reply in replies if reply is True)

    threads = [threading.Thread(target=hammer, args=(east, "east")), threading.Thread(target=hammer, args=(west, "west"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_for(lambda: east.mget(hot) == west.mget(hot), timeout=10, what="hot keys converged")
    conflicts = conflicts_counted_by_east(cluster)
    assert conflicts > 0

    first = tmp_path / "first.ndjson.zst"
    run = export(cluster, first)
    assert "frames" in run.stdout
    checked = verify(first)
    assert checked.returncode == 0, checked.stderr
    lines = lines_of(first)
    header, trailer = lines[0], lines[-1]
    assert header["type"] == "header" and header["cluster"] == "demo" and header["node"] == "east-1"
    assert trailer["type"] == "trailer"

    plain_keys = {"a:1", "a:2", "c:1", "t:short", "w:1", "cache:x"}
    assert deltas(lines, "east", plain_keys) == expected_east
    assert deltas(lines, "west", plain_keys) == expected_west
    assert all(l["namespace"] == "default" for l in lines if l["type"] in ("delta", "conflict"))
    # Every write east acknowledged to the hot keys is there, as a set of its own.
    assert len(deltas(lines, "east", set(hot))) == acknowledged["east"] == 200
    conflict_lines = [l for l in lines if l["type"] == "conflict"]
    assert len(conflict_lines) == conflicts == trailer["conflicts"]
    for line in conflict_lines:
        assert unb64(line["key"]) in hot
        assert (line["winner_hlc"], line["winner_origin"]) != (line["loser_hlc"], line["loser_origin"])
        assert {line["winner_origin"], line["loser_origin"]} <= {"0.0", "1.0"}
    for line in lines[1:-1]:
        if line["type"] == "delta":
            assert line["origin_node"] == {"east": "east-1", "west": "west-1"}[line["origin_dc"]]
            assert line["dot"] is not None and line["time"] >= time.strftime("%Y-%m-%dT%H:%M", time.gmtime(started_ms / 1000 - 60))
            if line["value"] is not None:
                assert hashlib.sha256(base64.b64decode(line["value"])).hexdigest() == line["value_sha256"]

    # DuckDB reads the compressed file as it is; its counts are the trailer's.
    path = str(first).replace("'", "''")
    counted = duckdb.sql(f"SELECT count(*) FILTER (type = 'delta'), count(*) FILTER (type = 'conflict') "
                         f"FROM read_json('{path}', format = 'newline_delimited')").fetchall()[0]
    stated = duckdb.sql(f"SELECT deltas, conflicts FROM read_json('{path}', format = 'newline_delimited') WHERE type = 'trailer'").fetchall()[0]
    assert counted == stated == (trailer["deltas"], trailer["conflicts"])
    by_op = dict(duckdb.sql(f"SELECT op, count(*) FROM read_json('{path}', format = 'newline_delimited') "
                            f"WHERE type = 'delta' GROUP BY op").fetchall())
    assert by_op["counter"] == 5 and by_op["expire"] == 2 and by_op["delete"] == 2

    # A second export resumes where the first ended: only what came after, and the pair verifies.
    east.set("a:9", "after the first export")
    second = tmp_path / "second.ndjson.zst"
    export(cluster, second, "--since-export", str(first))
    second_lines = lines_of(second)
    assert deltas(second_lines) == [("a:9", "set", "after the first export", None, False)]
    assert second_lines[0]["since"] == trailer["until"]
    pair = verify(first, second)
    assert pair.returncode == 0, pair.stderr
    # Continuing with another namespace filter would leave changes out of both files: refused.
    other = export(cluster, tmp_path / "other.ndjson.zst", "--since-export", str(first), "--namespace", "default", check=False)
    assert other.returncode != 0 and "same --namespace" in other.stderr
    # Given the other way round, the continuity check names the gap.
    swapped = verify(second, first)
    assert swapped.returncode == 1 and "missing" in swapped.stderr

    # Digest-only: the value is its SHA-256, not its bytes.
    digests = tmp_path / "digests.ndjson.zst"
    export(cluster, digests, "--digest-only", "--since", json.dumps(trailer["until"], separators=(",", ":")))
    digest_lines = [l for l in lines_of(digests) if l["type"] == "delta"]
    assert [l["value"] for l in digest_lines] == [hashlib.sha256(b"after the first export").hexdigest()]
    assert lines_of(digests)[0]["digest_only"] is True


def tampered(source: Path, target: Path, change) -> Path:
    plain = subprocess.run(["zstd", "-dc", str(source)], capture_output=True, check=True).stdout
    lines = plain.split(b"\n")[:-1]
    lines = change(lines)
    subprocess.run(["zstd", "-q", "-f", "-o", str(target)], input=b"".join(line + b"\n" for line in lines), check=True)
    return target


def test_a_large_export_spans_frames_and_tampering_is_named(cluster, tmp_path):
    east = client_for(cluster.ports["east-client"])
    count = 6_000
    pipe = east.pipeline(transaction=False)
    for n in range(count):
        pipe.set(f"bulk:{n:05d}", "v" * 200)
    pipe.execute()
    out = tmp_path / "bulk.ndjson.zst"
    run = export(cluster, out)
    frames = int(run.stdout.split(" in ")[1].split(" frames")[0])
    assert frames > 1, run.stdout
    assert f"{count} deltas" in run.stdout
    ok = verify(out)
    assert ok.returncode == 0, ok.stderr
    assert [unb64(l["key"]) for l in lines_of(out) if l["type"] == "delta"] == [f"bulk:{n:05d}" for n in range(count)]

    # Paced: the same export at 3,000 lines per second cannot take less than two seconds (a
    # lower bound: the node sleeps what each chunk's lines are worth), and is the same file.
    paced = tmp_path / "paced.ndjson.zst"
    started = time.monotonic()
    until = json.dumps(lines_of(out)[-1]["until"], separators=(",", ":"))
    run = export(cluster, paced, "--rate", "3000", "--until", until)
    assert time.monotonic() - started >= 1.9, run.stdout
    assert [l["hash"] for l in lines_of(paced)] == [l["hash"] for l in lines_of(out)]

    def refused(path: Path, line: int):
        result = verify(path)
        assert result.returncode == 1 and f"line {line}:" in result.stderr, (result.stdout, result.stderr)

    refused(tampered(out, tmp_path / "dropped.zst", lambda l: l[:4000] + l[4001:]), 4001)
    refused(tampered(out, tmp_path / "swapped.zst", lambda l: l[:10] + [l[11], l[10]] + l[12:]), 11)
    refused(tampered(out, tmp_path / "edited.zst", lambda l: l[:5000] + [l[5000].replace(b'"op":"set"', b'"op":"del"')] + l[5001:]), 5001)
    refused(tampered(out, tmp_path / "cut.zst", lambda l: l[:-1]), count + 1)
    truncated = tmp_path / "truncated.zst"
    truncated.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    assert verify(truncated).returncode == 1


def test_bad_requests_get_clear_errors(cluster, tmp_path):
    out = tmp_path / "x.ndjson.zst"
    run = export(cluster, out, "--namespace", "nope", check=False)
    assert run.returncode != 0 and "no namespace named 'nope'" in run.stderr
    run = export(cluster, out, "--namespace", "cache", check=False)
    assert run.returncode != 0 and "not audited" in run.stderr
    run = export(cluster, out, "--since", '{"1.0":"5"}', check=False)
    assert run.returncode != 0 and "node 1.0" in run.stderr
    run = export(cluster, out, "--since", "last tuesday", check=False)
    assert run.returncode != 0 and "RFC 3339" in run.stderr
    assert not out.exists() and not Path(str(out) + ".partial").exists()
    run = export(cluster, out, "--since", "2001-01-01T00:00:00Z", check=False)
    assert run.returncode != 0 and "older than audit_retention" in run.stderr
    export(cluster, out, "--force")
    run = export(cluster, out, check=False)
    assert run.returncode != 0 and "exists" in run.stderr
    east = client_for(cluster.ports["east-client"], decode=False)
    with pytest.raises(redis.ResponseError, match="invalid export cursor"):
        east.execute_command("AUDIT", "EXPORT", "CURSOR", "00ff")
    with pytest.raises(redis.ResponseError, match="RATE is lines per second"):
        east.execute_command("AUDIT", "EXPORT", "RATE", "-5")
    with pytest.raises(redis.ResponseError, match="unknown subcommand"):
        east.execute_command("AUDIT", "IMPORT")
    reply = east.execute_command("AUDIT", "EXPORT")
    assert isinstance(reply, list) and reply[0] == b"0" and reply[1][:4] == b"\x28\xb5\x2f\xfd"  # one zstd frame
