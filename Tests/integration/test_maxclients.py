"""maxclients: a connection beyond the limit gets Redis's error and is closed, while the
connections already open keep working; raising the limit admits new connections again.

How: CONFIG SET maxclients 3, hold three raw connections, open a fourth and read its first
reply (it must be the error, then end of stream), check the first three still answer, then
CONFIG SET maxclients 10 and connect once more.
"""

from conftest import parse_reply


def test_connection_beyond_maxclients_is_refused(meridian):
    first = meridian.raw()
    assert first.command("CONFIG", "SET", "maxclients", "3") == ("simple", b"OK")
    second, third = meridian.raw(), meridian.raw()
    assert second.command("PING") == ("simple", b"PONG")
    assert third.command("PING") == ("simple", b"PONG")

    fourth = meridian.raw()
    data = bytearray()
    while True:
        chunk = fourth.sock.recv(4096)
        if not chunk:
            break
        data += chunk
    assert parse_reply(bytes(data))[0] == ("error", b"ERR max number of clients reached")

    for connection in (first, second, third):
        assert connection.command("PING") == ("simple", b"PONG")
    assert first.command("CONFIG", "GET", "maxclients") == ("array", [("bulk", b"maxclients"), ("bulk", b"3")])
    assert first.command("CONFIG", "SET", "maxclients", "10") == ("simple", b"OK")
    fifth = meridian.raw()
    assert fifth.command("PING") == ("simple", b"PONG")
    for connection in (first, second, third, fifth):
        connection.close()
