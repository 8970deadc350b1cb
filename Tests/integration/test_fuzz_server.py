"""A seeded fuzzer against a live server: several connections send random mixes of valid
commands with random (often hostile) arguments, truncated frames and raw garbage. The server
must never crash, every connection either keeps answering or is closed after a protocol error,
and a bystander connection is served throughout.

How: each of three fixed seeds drives 300 rounds over 4 connections; every round sends one
burst and reads whatever comes back with a short timeout. At the end the server must still be
alive, answer PING on a fresh connection, and exit 0 on SIGTERM (checked by the fixture).
"""

import random
import socket

import pytest

from conftest import encode_command

COMMANDS = [
    "GET", "SET", "SETNX", "SETEX", "PSETEX", "GETSET", "GETDEL", "GETEX", "MGET", "MSET", "MSETNX",
    "APPEND", "STRLEN", "GETRANGE", "SETRANGE", "INCR", "DECR", "INCRBY", "DECRBY", "INCRBYFLOAT",
    "DEL", "UNLINK", "EXISTS", "TOUCH", "TYPE", "RENAME", "RENAMENX", "EXPIRE", "PEXPIRE", "EXPIREAT",
    "PEXPIREAT", "TTL", "PTTL", "EXPIRETIME", "PEXPIRETIME", "PERSIST", "SCAN", "KEYS", "RANDOMKEY",
    "OBJECT", "PING", "ECHO", "SELECT", "DBSIZE", "TIME", "CLIENT", "CONFIG", "COMMAND", "INFO", "HELLO",
]
WORDS = ["EX", "PX", "EXAT", "PXAT", "NX", "XX", "GT", "LT", "GET", "KEEPTTL", "PERSIST", "MATCH",
         "COUNT", "TYPE", "ENCODING", "IDLETIME", "FREQ", "GET", "SET", "LIST", "ID", "SETNAME", "3", "2"]
NUMBERS = ["0", "1", "-1", "9223372036854775807", "-9223372036854775808", "9223372036854775808",
           "18446744073709551615", "1e400", "inf", "-inf", "nan", "0.1", "  1", "01", "+5", ""]


def random_argument(rng: random.Random) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.choice(WORDS).encode()
    if kind == 1:
        return rng.choice(NUMBERS).encode()
    if kind == 2:
        return f"k{rng.randrange(20)}".encode()
    if kind == 3:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(12)))
    if kind == 4:
        return b"*" * rng.randrange(1, 40) + b"[a-" + b"]"
    return b"x" * rng.choice([0, 1, 255, 256, 257, 70_000])


def burst(rng: random.Random) -> bytes:
    choice = rng.randrange(10)
    if choice < 7:
        args = [rng.choice(COMMANDS).encode()] + [random_argument(rng) for _ in range(rng.randrange(6))]
        return encode_command(*args)
    if choice == 7:
        frame = encode_command(rng.choice(COMMANDS), random_argument(rng))
        return frame[: rng.randrange(1, len(frame))]  # truncated: the server must wait, not fail
    if choice == 8:
        return rng.choice(COMMANDS).encode() + b" " + b" ".join(random_argument(rng).replace(b"\n", b"") for _ in range(3)) + b"\r\n"
    return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))


@pytest.mark.parametrize("seed", [4242, 7, 99])
def test_random_traffic_never_crashes_the_server(meridian, seed):
    rng = random.Random(seed)
    bystander = meridian.raw()
    connections = [socket.create_connection(("127.0.0.1", meridian.port), timeout=0.05) for _ in range(4)]
    for round_number in range(300):
        index = rng.randrange(len(connections))
        connection = connections[index]
        try:
            connection.sendall(burst(rng))
            connection.recv(1 << 20)
        except socket.timeout:
            pass
        except OSError:
            # Closed after a protocol error (or QUIT): replace it and go on.
            connection.close()
            connections[index] = socket.create_connection(("127.0.0.1", meridian.port), timeout=0.05)
        if round_number % 50 == 0:
            assert meridian.alive(), meridian.log()[-3000:]
            assert bystander.command("PING") == ("simple", b"PONG")
    for connection in connections:
        connection.close()
    assert meridian.alive(), meridian.log()[-3000:]
    with meridian.raw() as fresh:
        assert fresh.command("PING") == ("simple", b"PONG")
    bystander.close()
