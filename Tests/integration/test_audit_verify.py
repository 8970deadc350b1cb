"""`meridian audit verify` (docs/AUDIT.md) on exports written here by an independent
implementation of the documented format (Python's hashlib and the `zstd` CLI): a valid export
and a consecutive pair verify; a flipped byte in the compressed file, a changed, dropped or
moved line, a truncated file, a wrong count and a gap between consecutive exports are each
refused with exit 1 and the line they are on.
"""
from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from pathlib import Path

from conftest import MERIDIAN_SERVER

MERIDIAN = str(Path(MERIDIAN_SERVER).with_name("meridian"))
ZERO = "0" * 64


def chained(fields: list[tuple[str, object]], prev: str) -> tuple[str, str]:
    """One line as docs/AUDIT.md defines it: keys in order, then prev, then the hash of
    everything before ,"hash":"."""
    body = "{" + ",".join(json.dumps(k) + ":" + json.dumps(v, separators=(",", ":"), ensure_ascii=False) for k, v in fields)
    body += ',"prev":' + json.dumps(prev)
    digest = hashlib.sha256(body.encode()).hexdigest()
    return body + ',"hash":"' + digest + '"}', digest


def export_lines(since: dict, until: dict, deltas: int = 6) -> list[str]:
    lines, prev = [], ZERO
    line, prev = chained([("type", "header"), ("format", 1), ("cluster", "demo"), ("node", "east-1"), ("since", since),
                          ("until", until), ("namespaces", []), ("digest_only", False)], prev)
    lines.append(line)
    for n in range(deltas):
        value = f"value {n}".encode()
        line, prev = chained([
            ("type", "delta"), ("namespace", "default"), ("key", base64.b64encode(f"k{n}".encode()).decode()),
            ("op", "set"), ("value", base64.b64encode(value).decode()), ("value_sha256", hashlib.sha256(value).hexdigest()),
            ("counter", None), ("hlc", str((1795849343000 + n) << 16)), ("time", "2026-11-28T07:02:23.000Z"),
            ("origin_dc", "east"), ("origin_node", "east-1"), ("dot", f"0.0#{n + 1}"), ("expiry", None)], prev)
        lines.append(line)
    head = prev
    line, prev = chained([("type", "trailer"), ("deltas", deltas), ("conflicts", 0), ("until", until), ("chain_head", head)], prev)
    lines.append(line)
    return lines


def write(path: Path, lines: list[str]) -> Path:
    plain = ("\n".join(lines) + "\n").encode()
    path.write_bytes(subprocess.run(["zstd", "-q", "-c", "--check"], input=plain, capture_output=True, check=True).stdout)
    return path


def verify(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([MERIDIAN, "audit", "verify", *map(str, paths)], capture_output=True, text=True)


def test_valid_exports_verify_and_chain_across_files(tmp_path):
    first = write(tmp_path / "1.ndjson.zst", export_lines({}, {"0.0": "6"}))
    second = write(tmp_path / "2.ndjson.zst", export_lines({"0.0": "6"}, {"0.0": "12"}))
    result = verify(first, second)
    assert result.returncode == 0, result.stderr
    assert "1.ndjson.zst: ok: 8 lines, 6 deltas, 0 conflicts" in result.stdout
    assert "2.ndjson.zst: ok" in result.stdout


def refused(result: subprocess.CompletedProcess, line: int | None, words: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    if line is not None:
        assert f"line {line}:" in result.stderr, result.stderr
    assert words in result.stderr, result.stderr


def test_tampering_is_refused_with_the_line(tmp_path):
    lines = export_lines({}, {"0.0": "6"})
    changed = list(lines)
    changed[3] = changed[3].replace("value_sha256", "value_sha257", 1)
    refused(verify(write(tmp_path / "changed.zst", changed)), 4, "keys")
    edited = list(lines)
    edited[2] = edited[2].replace('"op":"set"', '"op":"delete"', 1)
    refused(verify(write(tmp_path / "edited.zst", edited)), 3, "altered")
    dropped = lines[:4] + lines[5:]
    refused(verify(write(tmp_path / "dropped.zst", dropped)), 5, "prev does not match")
    swapped = list(lines)
    swapped[2], swapped[3] = swapped[3], swapped[2]
    refused(verify(write(tmp_path / "swapped.zst", swapped)), 3, "prev does not match")
    refused(verify(write(tmp_path / "truncated.zst", lines[:-1])), None, "no trailer")
    # A byte flipped in the compressed file: zstd's checksum (or the frame) refuses it.
    good = write(tmp_path / "good.zst", lines)
    damaged = bytearray(good.read_bytes())
    damaged[len(damaged) // 2] ^= 0x10
    (tmp_path / "flipped.zst").write_bytes(bytes(damaged))
    refused(verify(tmp_path / "flipped.zst"), 1, "damaged")
    # Cut mid-frame.
    (tmp_path / "cut.zst").write_bytes(good.read_bytes()[:-7])
    refused(verify(tmp_path / "cut.zst"), None, "truncated")


def test_continuity_does_not_depend_on_key_order(tmp_path):
    first = write(tmp_path / "1.zst", export_lines({}, {"0.0": "6", "1.0": "5"}))
    second = write(tmp_path / "2.zst", export_lines({"1.0": "5", "0.0": "6"}, {"0.0": "9", "1.0": "5"}))
    result = verify(first, second)
    assert result.returncode == 0, result.stderr


def test_a_gap_between_exports_is_refused(tmp_path):
    first = write(tmp_path / "1.zst", export_lines({}, {"0.0": "6"}))
    third = write(tmp_path / "3.zst", export_lines({"0.0": "12"}, {"0.0": "18"}))
    refused(verify(first, third), 1, "an export is missing between them")
