from __future__ import annotations

import socket
from pathlib import Path

import pytest

from infra.config import Settings
from infra.kafka_local import kafka_up, server_properties
from infra.procs import InfraError, port_open, read_pid


def test_server_properties_bind_loopback_on_the_configured_ports(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, kafka_port=19092, kafka_controller_port=19093)
    props = dict(line.split("=", 1) for line in server_properties(s, tmp_path / "d").splitlines() if line)
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["process.roles"] == "broker,controller"
    assert props["log.dirs"] == str(tmp_path / "d")


def test_read_pid_ignores_garbage_missing_and_dead(tmp_path: Path) -> None:
    f = tmp_path / "x.pid"
    assert read_pid(f) is None
    f.write_text("not a pid")
    assert read_pid(f) is None
    f.write_text("999999999\n")
    assert read_pid(f) is None
    import os
    f.write_text(f"{os.getpid()}\n")
    assert read_pid(f) == os.getpid()


def test_a_taken_port_gives_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOC_BOOTSTRAP", raising=False)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        assert port_open(port)
        s = Settings(home=tmp_path, kafka_port=port, kafka_controller_port=port + 1)
        with pytest.raises(InfraError, match=f"port {port} .* taken"):
            kafka_up(s, log=False)
