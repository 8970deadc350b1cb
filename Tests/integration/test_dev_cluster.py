"""`meridian dev-cluster`: every node of a configuration as child processes on loopback.

What it proves: it prints each node's client address, the nodes serve clients and link up,
their logs come through prefixed with the node's name, SIGTERM stops every child and exits 0,
and a child that dies stops the others (exit 1), so no half cluster is left behind.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time

from conftest import MERIDIAN_SERVER, client_for, free_port, ping_ok, wait_for, wait_for_start
from test_peer_links import topology

MERIDIAN_CLI = os.path.join(os.path.dirname(MERIDIAN_SERVER), "meridian")


def start_dev_cluster(tmp_path):
    ports = {name: free_port() for name in ("east-client", "east-peer", "west-client", "west-peer", "central-peer")}
    config = tmp_path / "cluster.yaml"
    config.write_text(topology("dev", ports))
    log = open(tmp_path / "dev-cluster.log", "wb")
    proc = subprocess.Popen([MERIDIAN_CLI, "dev-cluster", "--config", str(config), "--data-dir", str(tmp_path / "data"),
                             "--server", MERIDIAN_SERVER], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    output = lambda: (tmp_path / "dev-cluster.log").read_text(errors="replace")
    wait_for_start(proc, lambda: ping_ok(ports["east-client"]) and ping_ok(ports["west-client"]), output, what="dev-cluster (both full nodes answering PING)")
    return proc, ports, output


def child_pids(config_dir) -> list[int]:
    result = subprocess.run(["pgrep", "-f", f"meridian-server --config {config_dir}/cluster.yaml"], capture_output=True, text=True)
    return [int(pid) for pid in result.stdout.split()]


def test_runs_every_node_and_stops_them_on_sigterm(tmp_path):
    proc, ports, output = start_dev_cluster(tmp_path)
    try:
        assert f"east-1 (east) serves clients on 127.0.0.1:{ports['east-client']}" in output()
        assert "central-w (central, witness)" in output()
        wait_for(lambda: client_for(ports["east-client"]).info("replication").get("peer_west", {}).get("connected") == 1,
                 timeout=15, what="east linked to west")
        wait_for(lambda: "[central-w]" in output() and "[west-1]" in output(), timeout=10, what="prefixed logs")
        assert len(child_pids(tmp_path)) == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
    assert code == 0, output()
    assert "all nodes stopped" in output()
    assert child_pids(tmp_path) == []


def test_a_child_that_dies_stops_the_others(tmp_path):
    proc, ports, output = start_dev_cluster(tmp_path)
    try:
        east = [pid for pid in child_pids(tmp_path)
                if "east-1" in open(f"/proc/{pid}/cmdline").read().replace("\0", " ")]
        assert len(east) == 1
        os.kill(east[0], signal.SIGKILL)
        code = proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 1, output()
    assert "east-1 exited" in output()
    wait_for(lambda: child_pids(tmp_path) == [], timeout=10, what="the other nodes to stop")
