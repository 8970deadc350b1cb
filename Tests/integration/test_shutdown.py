"""Graceful shutdown on SIGTERM.

How:
* A client sends a large pipeline in one go (20,000 SETs and 300 GETs of a 64 KiB value, so
  the reply stream is ~19 MB) and reads replies as fast as it can on another thread; SIGTERM is
  sent once the first replies have arrived. Every byte the client received must parse as whole
  replies, in order, with no truncated reply at the end; the server must exit 0 (bounded wait).
* A slow reader: 300 GETs of 64 KiB are sent but nothing is read until after SIGTERM; all
  300 replies must then be delivered whole before the connection closes, and the exit code is 0.
* Idle clients (redis-py and raw) are connected when SIGTERM arrives: the server must still exit
  0 promptly, the clients must see their connections closed, and new connections are refused.
* Readiness race: the test waits for the "ready to accept connections" log line (what any
  supervisor or script would do) and sends SIGTERM immediately, up to forty times; each run must exit 0.
"""

import signal
import socket
import subprocess
import threading
import time

from conftest import (LOOPBACK, MERIDIAN_SERVER, READY_LINE, encode_command, free_port,
                      parse_reply, Incomplete)


def test_sigterm_with_large_pipeline_in_flight(start_meridian):
    server = start_meridian()
    big = b"x" * 65536
    with server.raw() as setup:
        assert setup.command("SET", "big", big) == ("simple", b"OK")

    commands = [encode_command("SET", f"k:{i}", "v") for i in range(20_000)]
    commands += [encode_command("GET", "big") for _ in range(300)]
    payload = b"".join(commands)
    sock = socket.create_connection((LOOPBACK, server.port), timeout=20)
    received = bytearray()
    first_bytes = threading.Event()
    done = threading.Event()

    def reader():
        deadline = time.monotonic() + 60
        try:
            for _ in range(1_000_000):
                if time.monotonic() > deadline:
                    break
                data = sock.recv(1 << 20)
                if not data:
                    break
                received.extend(data)
                first_bytes.set()
        except OSError:
            pass
        finally:
            first_bytes.set()
            done.set()

    def writer():
        try:
            sock.sendall(payload)
        except OSError:
            pass  # the server may close before it has read everything: that is allowed

    threads = [threading.Thread(target=reader), threading.Thread(target=writer)]
    for t in threads:
        t.start()
    assert first_bytes.wait(10), "no reply before SIGTERM"
    rc = server.stop(timeout=20)
    assert done.wait(20), "the server never closed the client connection"
    for t in threads:
        t.join(20)
    sock.close()
    assert rc == 0, f"exit code {rc} after SIGTERM\n{server.log()[-2000:]}"

    # Everything received must be whole replies, in order.
    buf, pos, replies = bytes(received), 0, []
    while pos < len(buf):
        try:
            value, pos = parse_reply(buf, pos)
        except Incomplete:
            break
        replies.append(value)
    leftover = len(buf) - pos
    assert leftover == 0, f"truncated reply: {leftover} trailing bytes after {len(replies)} complete replies"
    assert len(replies) > 0
    expected = [("simple", b"OK")] * 20_000 + [("bulk", big)] * 300
    assert replies == expected[:len(replies)], "replies out of order or wrong"
    print(f"{len(replies)} complete replies received before the connection closed")


def test_sigterm_with_slow_reader(start_meridian):
    """The client stops reading while ~19 MB of replies are owed (the server's output buffer
    fills up), SIGTERM arrives, and only then the client drains the socket: every reply owed
    for the commands sent must arrive whole, and the server exits 0."""
    server = start_meridian()
    big = b"y" * 65536
    with server.raw() as setup:
        assert setup.command("SET", "big", big) == ("simple", b"OK")
    payload = b"".join(encode_command("GET", "big") for _ in range(300))
    sock = socket.create_connection((LOOPBACK, server.port), timeout=20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    writer = threading.Thread(target=lambda: _send_ignoring_close(sock, payload))
    writer.start()
    time.sleep(0.3)
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    received = bytearray()
    deadline = time.monotonic() + 60
    for _ in range(100_000):
        if time.monotonic() > deadline:
            break
        try:
            data = sock.recv(1 << 20)
        except OSError:
            break
        if not data:
            break
        received.extend(data)
    writer.join(20)
    sock.close()
    rc = server.stop(timeout=20)
    assert rc == 0, f"exit code {rc}\n{server.log()[-2000:]}"
    buf, pos, count = bytes(received), 0, 0
    while pos < len(buf):
        try:
            value, pos = parse_reply(buf, pos)
        except Incomplete:
            break
        assert value == ("bulk", big)
        count += 1
    assert pos == len(buf), f"truncated reply after {count} complete ones"
    assert count == 300, f"only {count} of the 300 replies owed were delivered"


def _send_ignoring_close(sock, payload):
    try:
        sock.sendall(payload)
    except OSError:
        pass


def test_sigterm_with_idle_clients(start_meridian):
    server = start_meridian()
    port = server.port
    clients = [server.client() for _ in range(3)]
    for i, c in enumerate(clients):
        assert c.set(f"idle:{i}", "v") is True
    raws = [server.raw() for _ in range(3)]
    for r in raws:
        assert r.command("PING") == ("simple", b"PONG")
    start = time.monotonic()
    rc = server.stop(timeout=15)
    elapsed = time.monotonic() - start
    assert rc == 0
    assert elapsed < 6.0, f"shutdown with idle clients took {elapsed:.1f}s"
    for r in raws:
        assert r.is_closed_by_peer(timeout=2)
        r.close()
    try:
        socket.create_connection((LOOPBACK, port), timeout=1).close()
        raise AssertionError("the server still accepts connections after exiting")
    except ConnectionRefusedError:
        pass


def test_sigterm_right_after_ready_line(tmp_path):
    """A supervisor that waits for the ready line and then stops the server must see exit 0."""
    outcomes = []
    for attempt in range(40):
        log_path = tmp_path / f"run{attempt}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([MERIDIAN_SERVER, "--port", str(free_port()), "--bind", LOOPBACK,
                                     "--data-dir", str(tmp_path / "data")],
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        for _ in range(100_000):
            if READY_LINE in log_path.read_text(errors="replace") or proc.poll() is not None:
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.0005)
        proc.terminate()
        try:
            rc = proc.wait(3)
        except subprocess.TimeoutExpired:
            rc = "no exit within 3 s (SIGTERM lost)"
            proc.kill()
            proc.wait(5)
        outcomes.append(rc)
        if rc != 0:
            break
    assert all(rc == 0 for rc in outcomes), (
        f"SIGTERM sent right after '{READY_LINE}' was not handled gracefully: outcomes {outcomes} "
        "(-15 = killed by the default action, i.e. no handler yet)")
