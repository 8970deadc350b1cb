"""Shared fixtures for the Meridian integration suite.

What this file provides and how:

* ``MeridianProcess`` starts a real ``meridian-server`` (path from ``$MERIDIAN_SERVER``,
  default ``.build/debug/meridian-server``) on a loopback port picked by binding a socket to
  port 0, optionally with a YAML configuration written to a pytest tmp dir. It waits (bounded)
  for the "ready to accept connections" log line, a PING round trip and (Linux) the SIGTERM
  handler to appear in /proc/PID/status -- the server logs "ready" before installing it, a
  race that test_shutdown.py exposes on its own -- and ``stop()`` sends SIGTERM and waits
  (bounded) for the exit code.
* ``meridian`` (a fresh config-less server per test) and ``start_meridian`` (a factory taking
  config text) assert at teardown that every server they started exits 0 on SIGTERM.
* ``RedisProcess`` / ``redis_server``: a real ``redis-server --save '' --appendonly no`` on its
  own free loopback port, used as the reference implementation.
* ``RawConnection``: a plain socket speaking RESP by hand; ``read_reply()`` returns the exact
  bytes of one reply plus a typed parse, so tests can check wire formats (``_\\r\\n`` etc.).
* ``Differ`` / ``diff``: runs the same command against Meridian and Redis and records every
  reply that differs (exact error strings included). It is parametrized over four transports:
  redis-py RESP2, redis-py ``protocol=3``, and raw sockets in RESP2 and RESP3 (the raw ones
  compare reply *types* too, e.g. ``+OK`` vs ``$2 OK``). ``d.done()`` fails the test with a
  readable report of every mismatch, and refuses to pass if nothing was compared.

Every wait in this file is bounded both in iterations and in wall-clock time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

MERIDIAN_SERVER = os.environ.get("MERIDIAN_SERVER", "/work/main/.build/debug/meridian-server")
REDIS_SERVER = os.environ.get("REDIS_SERVER", "redis-server")
LOOPBACK = "127.0.0.1"
READY_LINE = "ready to accept connections"


# --------------------------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------------------------


# Bytes charged per entry on top of its key and value (Limits.entryOverheadBytes, reported
# as `entry_overhead_bytes` in INFO memory; calibrated against RSS, see docs/PERFORMANCE.md).
ENTRY_OVERHEAD = 200


def resident_bytes(pid: int) -> int:
    """The resident memory of a process, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc status")


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (bind to port 0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.02, what: str = "condition") -> Any:
    """Polls ``predicate`` until it returns a truthy value; bounded in time and in iterations."""
    deadline = time.monotonic() + timeout
    max_iterations = int(timeout / interval) + 2
    last = None
    for _ in range(max_iterations):
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")


# How long a server may take to come up. Generous on purpose: this is not a timing check, and on
# a loaded CI machine the first fsyncs of a fresh store (RocksDB opening the Paxos log) can
# wait behind seconds of writeback from the build. A server that exits fails at once instead.
STARTUP_TIMEOUT = 60.0


def wait_for_start(proc: subprocess.Popen, ready: Callable[[], Any], read_log: Callable[[], str], what: str,
                   timeout: float = STARTUP_TIMEOUT) -> None:
    """Waits until ``ready()`` holds for a process just started; fails at once, with its log, if
    the process exits first, and with its log if it is not ready within ``timeout``."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.02) + 2):
        if ready():
            return
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode} before it was ready:\n{read_log()[-4000:]}")
        if time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    raise AssertionError(f"{what} not ready after {timeout}s; its log:\n{read_log()[-4000:]}")


def ping_ok(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5) as s:
            s.settimeout(0.5)
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def sigterm_handler_installed(pid: int) -> bool:
    """Whether the process has a SIGTERM handler installed (Linux: SigCgt in /proc/PID/status).
    meridian-server logs "ready" before it installs its handler; a SIGTERM in between is lost
    or kills it un-gracefully (see test_shutdown.py), so fixtures wait for this as well."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    except OSError:
        return True  # no /proc: nothing to wait for
    return False


def client_for(port: int, protocol: int = 2, decode: bool = True, **kw) -> redis.Redis:
    return redis.Redis(
        host=LOOPBACK, port=port, protocol=protocol, decode_responses=decode,
        socket_timeout=kw.pop("socket_timeout", 10), socket_connect_timeout=5, **kw)


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


class MeridianProcess:
    """One ``meridian-server`` child process on a loopback port of our choosing."""

    def __init__(self, workdir: Path, config_text: str | None = None, extra_args: Iterable[str] = ()):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_text = config_text
        self.extra_args = list(extra_args)
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "meridian.log"
        self.config_path: Path | None = None
        self.returncode: int | None = None
        self.stopped = False  # stop() was called (by the test or the fixture)

    def command(self, port: int) -> list[str]:
        args = [MERIDIAN_SERVER, "--port", str(port), "--bind", LOOPBACK,
                "--data-dir", str(self.workdir / "data")]
        if self.config_text is not None:
            self.config_path = self.workdir / "meridian.yaml"
            self.config_path.write_text(self.config_text.replace("@PORT@", str(port)))
            args += ["--config", str(self.config_path)]
        return args + self.extra_args

    def start(self, timeout: float = STARTUP_TIMEOUT) -> "MeridianProcess":
        assert os.path.exists(MERIDIAN_SERVER), f"server binary not found: {MERIDIAN_SERVER}"
        self.stopped = False  # a restarted server is the fixture's to stop again
        for attempt in range(3):  # a port that was free can be taken before we bind it
            port = free_port()
            with open(self.log_path, "wb") as log:
                proc = subprocess.Popen(self.command(port), stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
            deadline = time.monotonic() + timeout
            for _ in range(int(timeout / 0.02) + 2):
                if proc.poll() is not None or READY_LINE in self.log() or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            if proc.poll() is not None:
                if "in use" in self.log().lower() and attempt < 2:
                    continue
                raise AssertionError(f"meridian-server exited with {proc.returncode} at start:\n{self.log()}")
            if READY_LINE not in self.log():
                proc.kill()
                proc.wait(5)
                raise AssertionError(f"meridian-server never logged '{READY_LINE}':\n{self.log()}")
            self.proc, self.port = proc, port
            wait_for(lambda: ping_ok(port), timeout=10, what=f"PING on port {port}")
            wait_for(lambda: sigterm_handler_installed(proc.pid), timeout=10, interval=0.005,
                     what="meridian-server's SIGTERM handler")
            return self
        raise AssertionError("could not find a free port for meridian-server")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def client(self, protocol: int = 2, decode: bool = True, **kw) -> redis.Redis:
        assert self.port is not None
        return client_for(self.port, protocol=protocol, decode=decode, **kw)

    def raw(self, timeout: float = 5.0) -> "RawConnection":
        assert self.port is not None
        return RawConnection(self.port, timeout=timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> float:
        """SIGKILL, as a crash: no handler runs. Returns time.monotonic() taken just before the
        signal (no reply the server sends after it can have been acknowledged earlier)."""
        assert self.proc is not None
        moment = time.monotonic()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.returncode = self.proc.returncode
        self.proc = None
        return moment

    def info(self, section: str) -> dict:
        return self.client().info(section)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then wait; returns the exit code (killing and returning None if it hangs)."""
        if self.proc is None:
            return self.returncode
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                self.returncode = None
                self.proc = None
                return None
        self.returncode = self.proc.returncode
        self.proc = None
        return self.returncode


class RedisProcess:
    """A reference ``redis-server`` with persistence off. ``--databases 1`` makes ``SELECT 1``
    fail the same way it does on Meridian (which serves database 0 only), so it can be diffed."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None

    def start(self) -> "RedisProcess":
        for _ in range(3):
            port = free_port()
            log = open(self.workdir / "redis.log", "wb")
            proc = subprocess.Popen(
                [REDIS_SERVER, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
                 "--databases", "1", "--dir", str(self.workdir)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            log.close()
            try:
                wait_for(lambda: proc.poll() is not None or ping_ok(port), timeout=10, what="redis-server")
            except AssertionError:
                proc.kill()
                proc.wait(5)
                raise
            if proc.poll() is None:
                self.proc, self.port = proc, port
                return self
        raise AssertionError("could not start redis-server")

    def client(self, protocol: int = 2, decode: bool = True, **kw) -> redis.Redis:
        return client_for(self.port, protocol=protocol, decode=decode, **kw)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(5)
        self.proc = None
        return rc


# --------------------------------------------------------------------------------------------
# Config helper
# --------------------------------------------------------------------------------------------

STANDARD_NAMESPACES = """\
  - { name: default, prefix: "", consistency: eventual, durability: memory, eviction: lru }
  - { name: session, prefix: "session:", consistency: eventual, durability: memory, eviction: lru, default_ttl: 30m }
  - { name: config, prefix: "config:", consistency: strong, durability: write-through, eviction: none }
  - { name: pinned, prefix: "pinned:", durability: memory, eviction: none }
  - { name: profile, prefix: "profile:", strong_keys: ["profile:*:email"] }
"""


def make_config(namespaces: str = STANDARD_NAMESPACES, maxmemory: str | None = None, node: str = "east-1") -> str:
    """Config text with a single node whose client port is substituted at start (``@PORT@``)."""
    text = (
        "cluster:\n"
        "  name: test\n"
        "  datacenters:\n"
        "    - name: east\n"
        "      nodes:\n"
        f"        - {{ name: {node}, client: \"127.0.0.1:@PORT@\" }}\n"
        "namespaces:\n" + namespaces
    )
    if maxmemory is not None:
        text += f"limits: {{ maxmemory: {maxmemory} }}\n"
    return text


# --------------------------------------------------------------------------------------------
# Fixtures: servers
# --------------------------------------------------------------------------------------------


@pytest.fixture
def start_meridian(tmp_path):
    """Factory: ``start_meridian(config_text=None, extra_args=())`` -> started MeridianProcess.
    Every server started through it must exit 0 on SIGTERM at teardown."""
    started: list[MeridianProcess] = []

    def start(config_text: str | None = None, extra_args: Iterable[str] = ()) -> MeridianProcess:
        server = MeridianProcess(tmp_path / f"meridian-{len(started)}", config_text, extra_args)
        started.append(server)
        return server.start()

    yield start
    failures = []
    for server in started:
        if server.stopped or server.proc is None:
            continue  # stopped by the test itself (which checks the code), or never started
        was_alive = server.alive()
        rc = server.stop()
        if was_alive and rc != 0:
            failures.append(f"port {server.port}: exit code {rc} after SIGTERM\n{server.log()[-3000:]}")
        elif not was_alive:
            failures.append(f"port {server.port}: server died during the test (code {rc})\n{server.log()[-3000:]}")
    assert not failures, "meridian-server did not shut down cleanly:\n" + "\n".join(failures)


@pytest.fixture
def meridian(start_meridian) -> MeridianProcess:
    """A fresh config-less meridian-server (single node, `default` namespace only)."""
    return start_meridian()


@pytest.fixture
def meridian_ns(start_meridian) -> MeridianProcess:
    """A fresh meridian-server with the standard five namespaces (default, session, config,
    pinned, profile) and no memory limit."""
    return start_meridian(make_config())


@pytest.fixture(scope="session")
def shared_meridian(tmp_path_factory):
    """One config-less meridian-server shared by the differential tests (flushed per test)."""
    server = MeridianProcess(tmp_path_factory.mktemp("shared-meridian")).start()
    yield server
    was_alive = server.alive()
    rc = server.stop()
    assert was_alive and rc == 0, f"shared meridian-server: alive={was_alive}, exit code {rc}\n{server.log()[-3000:]}"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


# --------------------------------------------------------------------------------------------
# Raw RESP connection
# --------------------------------------------------------------------------------------------


class Incomplete(Exception):
    pass


class ConnectionClosed(Exception):
    pass


def encode_command(*args) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, int):
            a = str(a).encode()
        elif isinstance(a, str):
            a = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def parse_reply(buf: bytes, pos: int = 0):
    """Parses one RESP2/RESP3 reply at ``pos``; returns (typed value, end). Raises Incomplete.

    Typed values: ('simple', b), ('error', b), ('int', n), ('bulk', b|None), ('array', [..]|None),
    ('null',), ('double', b), ('bool', b), ('bignum', b), ('verbatim', b), ('bulkerror', b),
    ('map', [(k, v)..]), ('set', [..]), ('push', [..]), ('attr', [(k, v)..]).
    """
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise Incomplete
    kind, line, nxt = buf[pos:pos + 1], buf[pos + 1:end], end + 2
    simple = {b"+": "simple", b"-": "error", b",": "double", b"#": "bool", b"(": "bignum"}
    if kind in simple:
        return (simple[kind], line), nxt
    if kind == b":":
        return ("int", int(line)), nxt
    if kind == b"_":
        return ("null",), nxt
    if kind in (b"$", b"=", b"!"):
        n = int(line)
        name = {b"$": "bulk", b"=": "verbatim", b"!": "bulkerror"}[kind]
        if n < 0:
            return (name, None), nxt
        if len(buf) < nxt + n + 2:
            raise Incomplete
        return (name, buf[nxt:nxt + n]), nxt + n + 2
    if kind in (b"*", b"~", b">"):
        n = int(line)
        name = {b"*": "array", b"~": "set", b">": "push"}[kind]
        if n < 0:
            return (name, None), nxt
        items = []
        for _ in range(n):
            item, nxt = parse_reply(buf, nxt)
            items.append(item)
        return (name, items), nxt
    if kind in (b"%", b"|"):
        n = int(line)
        pairs = []
        for _ in range(n):
            k, nxt = parse_reply(buf, nxt)
            v, nxt = parse_reply(buf, nxt)
            pairs.append((k, v))
        return ("map" if kind == b"%" else "attr", pairs), nxt
    raise ValueError(f"not a RESP reply at byte {pos}: {buf[pos:pos + 40]!r}")


class RawConnection:
    """A socket speaking RESP by hand, for wire-level checks."""

    def __init__(self, port: int, timeout: float = 5.0):
        self.sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, *args) -> tuple:
        self.send(encode_command(*args))
        return self.read_reply()[1]

    def _fill(self) -> None:
        try:
            data = self.sock.recv(1 << 20)
        except ConnectionResetError:
            data = b""
        if not data:
            raise ConnectionClosed(f"connection closed with {len(self.buf)} unread bytes")
        self.buf += data

    def read_reply(self, max_reads: int = 100_000, deadline_s: float = 60.0) -> tuple[bytes, tuple]:
        """Returns (exact bytes, typed value) of the next reply (bounded in reads and time)."""
        deadline = time.monotonic() + deadline_s
        for _ in range(max_reads):
            if time.monotonic() > deadline:
                break
            try:
                value, end = parse_reply(self.buf, 0)
            except Incomplete:
                self._fill()
                continue
            raw, self.buf = self.buf[:end], self.buf[end:]
            return raw, value
        raise AssertionError("reply never completed")

    def read_replies(self, n: int) -> list[tuple]:
        return [self.read_reply()[1] for _ in range(n)]

    def is_closed_by_peer(self, timeout: float = 3.0) -> bool:
        """True if the server closes the connection (EOF/reset) within ``timeout`` and sends
        nothing more; any extra bytes received are kept in ``self.buf``."""
        self.sock.settimeout(0.2)
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.2) + 2):
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                if time.monotonic() > deadline:
                    return False
                continue
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not data:
                return True
            self.buf += data
        return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------------------------
# Differential testing
# --------------------------------------------------------------------------------------------


def _plain(value):
    """redis-py replies -> comparable plain values (errors become tagged tuples)."""
    if isinstance(value, Exception):
        return ("ERROR", type(value).__name__, str(value))
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, set):
        return frozenset(_plain(v) for v in value)
    return value


def _sort_key(v):
    return repr(v)


def _unordered(value):
    """Sort the elements of a top-level collection so that order does not matter."""
    if isinstance(value, tuple) and len(value) == 2 and value[0] in ("array", "set") and value[1] is not None:
        return (value[0], sorted(value[1], key=_sort_key))
    if isinstance(value, list):
        return sorted(value, key=_sort_key)
    return value


def _close_enough(a, b, tol) -> bool:
    """Equality where integers may differ by ``tol`` (for TTLs measured a moment apart)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, int) and isinstance(b, int):
        return abs(a - b) <= tol
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_close_enough(x, y, tol) for x, y in zip(a, b))
    return a == b


class Differ:
    """Runs commands on Meridian and on Redis and records every difference."""

    MODES = ("resp2", "resp3", "raw2", "raw3")

    def __init__(self, mode: str, meridian_port: int, redis_port: int, test_name: str):
        self.mode = mode
        self.test_name = test_name
        self.compared = 0
        self.mismatches: list[str] = []
        self.history: list[str] = []
        self.finished = False
        self.ports = {"meridian": meridian_port, "redis": redis_port}
        self.conns: dict[str, Any] = {}
        for name, port in self.ports.items():
            self.conns[name] = self._connect(port)

    def _connect(self, port: int):
        if self.mode.startswith("raw"):
            conn = RawConnection(port)
            if self.mode == "raw3":
                reply = conn.command("HELLO", "3")
                assert reply[0] == "map", f"HELLO 3 did not answer a map: {reply}"
            return conn
        client = client_for(port, protocol=3 if self.mode == "resp3" else 2, decode=False,
                            single_connection_client=True, retry=Retry(NoBackoff(), 0))
        client.response_callbacks.clear()  # compare what the server said, not redis-py's rewrite
        return client

    def _execute(self, name: str, args: tuple):
        conn = self.conns[name]
        if self.mode.startswith("raw"):
            try:
                return conn.command(*args)
            except ConnectionClosed as e:
                self.conns[name] = self._connect(self.ports[name])
                return ("CONNECTION CLOSED", str(e))
        try:
            return _plain(conn.execute_command(*args))
        except redis.ConnectionError as e:
            conn.close()
            self.conns[name] = self._connect(self.ports[name])
            return ("CONNECTION ERROR", str(e))
        except redis.RedisError as e:
            return _plain(e)

    def both(self, *args):
        """Runs the command on both servers without comparing; returns (meridian, redis)."""
        return self._execute("meridian", args), self._execute("redis", args)

    def cmd(self, *args, tol: int | None = None, unordered: bool = False,
            check: Callable[[Any, Any], bool] | None = None, raw_only: bool = False):
        """Runs one command on both servers and records a mismatch if the replies differ.
        ``tol``: integers may differ by this much; ``unordered``: compare a collection as a set;
        ``check(meridian, redis)``: a custom equivalence; ``raw_only``: skip on the redis-py
        transports (redis-py splits a command name on spaces, so it cannot send an empty one).
        Returns Meridian's reply."""
        if raw_only and not self.mode.startswith("raw"):
            return None
        m, r = self.both(*args)
        self.compared += 1
        mm, rr = (_unordered(m), _unordered(r)) if unordered else (m, r)
        if check is not None:
            same = check(m, r)
        elif tol is not None:
            same = _close_enough(mm, rr, tol)
        else:
            same = mm == rr
        line = f"{' '.join(_show_arg(a) for a in args)}"
        self.history.append(line if same else f"{line}    <-- MISMATCH")
        if not same:
            context = "\n".join(f"      {h}" for h in self.history[-12:])
            self.mismatches.append(
                f"[{self.mode}] {line}\n    meridian: {m!r}\n    redis:    {r!r}\n    sequence (last 12):\n{context}")
        return m

    def scan_all(self, *scan_args) -> tuple[set, set]:
        """Full SCAN iteration on both servers; returns the two key sets (bounded loop)."""
        results = {}
        deadline = time.monotonic() + 60
        for name in ("meridian", "redis"):
            keys, cursor = set(), b"0"
            for _ in range(10_000):
                if time.monotonic() > deadline:
                    keys.add(("SCAN TIMED OUT",))
                    break
                reply = self._execute(name, ("SCAN", cursor) + scan_args)
                cur, batch = _scan_parts(reply)
                if cur is None:
                    keys = {("SCAN FAILED", repr(reply))}
                    break
                keys.update(batch)
                cursor = cur
                if cursor in (b"0", "0"):
                    break
            else:
                keys.add(("SCAN DID NOT FINISH",))
            results[name] = keys
        return results["meridian"], results["redis"]

    def cmp_scan(self, *scan_args) -> set:
        m, r = self.scan_all(*scan_args)
        self.compared += 1
        line = "SCAN <full iteration> " + " ".join(_show_arg(a) for a in scan_args)
        self.history.append(line if m == r else f"{line}    <-- MISMATCH")
        if m != r:
            self.mismatches.append(
                f"[{self.mode}] {line}\n    meridian keys: {sorted(map(repr, m))}\n    redis keys:    {sorted(map(repr, r))}")
        return m

    def expect(self, condition: bool, message: str) -> None:
        """Records a failed assertion about the pair of replies without stopping the test."""
        self.compared += 1
        if not condition:
            self.mismatches.append(f"[{self.mode}] {message}")

    def done(self) -> None:
        self.finished = True
        assert self.compared > 0, "differential test compared nothing"
        if self.mismatches:
            pytest.fail(
                f"{len(self.mismatches)} of {self.compared} replies differ between Meridian and redis-server "
                f"({self.test_name}, transport {self.mode}):\n\n" + "\n\n".join(self.mismatches), pytrace=False)

    def close(self):
        for conn in self.conns.values():
            try:
                conn.close()
            except Exception:
                pass


def _show_arg(a) -> str:
    if isinstance(a, bytes):
        a = a.decode(errors="backslashreplace")
    a = str(a)
    if len(a) > 40:
        a = a[:20] + f"...({len(a)} bytes)"
    return a if a and " " not in a else repr(a)


def _scan_parts(reply):
    """Cursor and keys from a SCAN reply in either the raw-typed or the redis-py shape."""
    if isinstance(reply, tuple) and reply and reply[0] == "array" and len(reply[1] or []) == 2:
        cur, keys = reply[1]
        if cur[0] != "bulk" or keys[0] not in ("array", "set"):
            return None, set()
        return cur[1], {k[1] for k in keys[1]}
    if isinstance(reply, list) and len(reply) == 2 and isinstance(reply[1], list):
        return reply[0], set(reply[1])
    return None, set()


@pytest.fixture(params=Differ.MODES)
def diff(request, shared_meridian, redis_server):
    """A Differ over flushed shared servers, once per transport."""
    for server in (shared_meridian, redis_server):
        c = server.client()
        c.flushdb()
        c.config_set("maxmemory", 0)  # a failed test may have left a limit behind
        c.close()
    d = Differ(request.param, shared_meridian.port, redis_server.port, request.node.name)
    yield d
    d.close()
    assert d.finished, "differential test forgot to call d.done()"
