"""`meridian wan-proxy`, the WAN emulator for the strong-consistency tests and benchmarks
(docs/CONSISTENCY.md, "WAN emulator"), in front of a real meridian-server on loopback.

What it proves: a round trip through a link takes at least twice its one-way delay and comes
back right; thousands of pipelined commands arrive and are answered in order; a cut link
carries nothing (a command gets no reply) and new connections through it stay silent, and
after `heal` new connections work again; `reset` closes the link's connections; `delay`
changes the delay of a running link; the control port refuses unknown links and commands, and
the tool refuses malformed links.
"""
from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

from conftest import MERIDIAN_SERVER, client_for

MERIDIAN = str(Path(MERIDIAN_SERVER).with_name("meridian"))


@pytest.fixture
def proxied(meridian):
    proc = subprocess.Popen([MERIDIAN, "wan-proxy", "--link", f"east-west=127.0.0.1:0,127.0.0.1:{meridian.port},50ms"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    link_line = proc.stdout.readline()
    control_line = proc.stdout.readline()
    assert link_line.startswith("link east-west on 127.0.0.1:"), link_line
    link_port = int(link_line.split(" on ")[1].split(" ")[0].rsplit(":", 1)[1])
    control_port = int(control_line.strip().rsplit(":", 1)[1])
    control = socket.create_connection(("127.0.0.1", control_port), timeout=5)
    reader = control.makefile("r")

    def command(line: str) -> str:
        control.sendall((line + "\n").encode())
        return reader.readline().strip()

    yield link_port, command
    control.close()
    proc.terminate()
    assert proc.wait(10) == 0


def test_delay_order_cut_heal_reset(proxied):
    port, command = proxied
    client = client_for(port, socket_timeout=5)
    started = time.monotonic()
    assert client.ping() is True
    assert time.monotonic() - started >= 0.1  # two one-way delays of 50 ms, at least
    pipe = client.pipeline(transaction=False)
    for n in range(2_000):
        pipe.set(f"wan:{n}", n)
        pipe.get(f"wan:{n}")
    replies = pipe.execute()
    assert replies[1::2] == [str(n) for n in range(2_000)]

    assert command("cut east-west") == "OK"
    assert "cut" in command("links")
    silent = client_for(port, socket_timeout=1)
    with pytest.raises(redis.exceptions.TimeoutError):
        silent.ping()
    assert command("heal east-west") == "OK"
    assert client_for(port, socket_timeout=5).ping() is True

    assert command("delay east-west 0ms") == "OK"
    assert "delay 0 ms" in command("links")
    kept = socket.create_connection(("127.0.0.1", port), timeout=5)
    kept.sendall(b"PING\r\n")
    assert kept.recv(100) == b"+PONG\r\n"
    assert command("reset east-west") == "OK"
    assert kept.recv(100) == b""  # closed by the proxy
    kept.close()


def test_control_and_arguments_refuse_mistakes(proxied, tmp_path):
    _, command = proxied
    assert command("cut nowhere").startswith("ERR no link named 'nowhere'")
    assert command("explode east-west").startswith("ERR unknown command")
    assert command("delay east-west soon").startswith("ERR the delay")
    bad = subprocess.run([MERIDIAN, "wan-proxy", "--link", "two-parts=127.0.0.1:0,5ms"], capture_output=True, text=True, timeout=10)
    assert bad.returncode != 0 and "NAME=LISTEN,TARGET,DELAY" in bad.stderr
