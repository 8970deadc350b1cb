"""Output backpressure: a client that pipelines large reads and does not read the replies
cannot make the server buffer them all.

How: store a 1 MiB value, send 400 GETs of it in one write on a raw socket and read nothing
for a while (400 MiB of replies are owed). The server's resident memory, read from
/proc/PID/status while the client stalls, must stay far below what buffering every reply
would take, and another client must be served meanwhile. Then the stalled client reads all
400 replies and each must be the complete value.
"""

import socket
import time

from conftest import encode_command, resident_bytes

VALUE_BYTES = 1_048_576
GETS = 400


def test_unread_replies_do_not_grow_server_memory(meridian):
    client = meridian.client(decode=False)
    value = b"v" * VALUE_BYTES
    assert client.set("big", value)
    baseline = resident_bytes(meridian.proc.pid)

    stalled = socket.create_connection(("127.0.0.1", meridian.port))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    stalled.sendall(encode_command("GET", "big") * GETS)
    time.sleep(1.5)  # the server works through what it can while nothing is read

    peak = resident_bytes(meridian.proc.pid)
    assert peak - baseline < 100 * 1024 * 1024, f"server grew by {(peak - baseline) >> 20} MiB for unread replies"
    assert client.get("big") == value, "other clients are still served"

    header = f"${VALUE_BYTES}\r\n".encode()
    reply_bytes = len(header) + VALUE_BYTES + 2
    expected = GETS * reply_bytes
    received = bytearray()
    stalled.settimeout(30)
    deadline = time.monotonic() + 60
    while len(received) < expected and time.monotonic() < deadline:
        chunk = stalled.recv(4 * 1024 * 1024)
        assert chunk, "connection closed before every reply arrived"
        received += chunk
    stalled.close()
    assert len(received) == expected
    for index in range(GETS):
        start = index * reply_bytes
        assert received[start:start + len(header)] == header
        assert received[start + len(header):start + len(header) + 16] == b"v" * 16
        assert received[start + reply_bytes - 2:start + reply_bytes] == b"\r\n"
