"""The deployment files at the top level: docker-compose.yml and the Dockerfile it builds.
Containers cannot run here, so this validates them: Debian's `docker-compose config -q`
accepts the compose file (and refuses a broken one, so the check can fail), every service
runs a node that the configuration it ships names, and `meridian config check` accepts that
configuration.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml  # python3-yaml, which Debian's docker-compose depends on

from conftest import MERIDIAN_SERVER

ROOT = Path(__file__).resolve().parents[2]
MERIDIAN_CLI = str(Path(MERIDIAN_SERVER).with_name("meridian"))


def test_compose_file_is_valid():
    result = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_a_broken_compose_file_is_refused(tmp_path):
    broken = tmp_path / "docker-compose.yml"
    broken.write_text((ROOT / "docker-compose.yml").read_text().replace("services:", "servics:"))
    result = subprocess.run(["docker-compose", "-f", str(broken), "config", "-q"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode != 0


def test_every_service_runs_a_node_of_the_shipped_configuration():
    config = (ROOT / "deploy" / "docker-demo.yaml").read_text()
    nodes = set(re.findall(r"name: ([a-z0-9-]+), (?:client|peer):", config))
    assert nodes == {"east-1", "west-1", "central-w"}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = {name: service["command"][service["command"].index("--node") + 1] for name, service in compose["services"].items()}
    assert set(services.values()) == nodes, services
    assert {"7101:7101", "7102:7102"} <= {port for service in compose["services"].values() for port in service.get("ports", [])}
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY deploy/docker-demo.yaml /etc/meridian/cluster.yaml" in dockerfile
    assert '"--config", "/etc/meridian/cluster.yaml"' in dockerfile
    check = subprocess.run([MERIDIAN_CLI, "config", "check", str(ROOT / "deploy" / "docker-demo.yaml")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr + check.stdout
