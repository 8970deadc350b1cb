"""Inputs that used to let one client hurt the server: a reply too large to buffer, and a
continuous stream of commands whose consumed bytes were never released.

How: (1) MGET of the same 1 MiB value 300 times asks for a 300 MiB reply, beyond the 256 MiB
a command may produce: the exact error comes back, the server's resident memory does not grow
by the reply's size, and the connection keeps working. (2) One connection streams about 150 MB
of SET commands with 50 KB values in 1 MB writes, never pausing, while a thread reads the
replies; the server's resident memory must not grow by anything like the bytes streamed.
"""

import socket
import threading

from conftest import Incomplete, encode_command, parse_reply, resident_bytes


def test_oversized_mget_reply_is_refused(meridian):
    client = meridian.client(decode=False)
    assert client.set("big", b"v" * 1_048_576)
    baseline = resident_bytes(meridian.proc.pid)
    with meridian.raw(timeout=30) as raw:
        reply = raw.command("MGET", *(["big"] * 300))
        assert reply == ("error", b"ERR reply too large (max 268435456 bytes): ask for fewer keys per MGET"), reply[:1]
        assert raw.command("PING") == ("simple", b"PONG")
        kind, values = raw.command("MGET", *(["big"] * 4))
        assert kind == "array" and len(values) == 4 and values[0] == ("bulk", b"v" * 1_048_576)
    assert resident_bytes(meridian.proc.pid) - baseline < 100 * 1024 * 1024


def test_streamed_writes_do_not_accumulate(meridian):
    value = b"s" * 50_000
    command = encode_command("SET", "stream", value)
    per_megabyte = max(1, 1_048_576 // len(command))
    chunk = command * per_megabyte
    chunks = 150
    expected_replies = per_megabyte * chunks
    baseline = resident_bytes(meridian.proc.pid)
    peak = baseline
    sock = socket.create_connection(("127.0.0.1", meridian.port), timeout=30)
    replies = []

    def read_replies():
        buffer = b""
        while len(replies) < expected_replies:
            data = sock.recv(1 << 16)
            if not data:
                return
            buffer += data
            position = 0
            while True:
                try:
                    value, position = parse_reply(buffer, position)
                except Incomplete:
                    break
                replies.append(value)
            buffer = buffer[position:]

    reader = threading.Thread(target=read_replies)
    reader.start()
    for index in range(chunks):
        sock.sendall(chunk)
        if index % 10 == 0:
            peak = max(peak, resident_bytes(meridian.proc.pid))
    reader.join(60)
    sock.close()
    assert len(replies) == expected_replies and all(r == ("simple", b"OK") for r in replies)
    assert peak - baseline < 64 * 1024 * 1024, f"server grew by {(peak - baseline) >> 20} MiB while ~150 MB streamed through"
