"""Infra logic that needs no services: generated properties, pid files, port probes, locks, settings."""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from infra import cli_infra
from infra.config import Settings
from infra.kafka_local import KafkaPaths, jars_ready, kafka_up, pom_digest, server_properties
from infra.postgres_local import traversable
from infra.procs import InfraError, cmdline_has, exclusive, port_open, read_pid


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          timeout=30, check=True)
    return int(proc.stdout)


def test_server_properties_bind_loopback_on_the_configured_ports(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, kafka_port=19092, kafka_controller_port=19093)
    props = dict(line.split("=", 1) for line in server_properties(s, tmp_path / "d").splitlines() if line)
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["process.roles"] == "broker,controller"
    assert props["log.dirs"] == str(tmp_path / "d")
    assert props["auto.create.topics.enable"] == "true"
    assert props["offsets.topic.replication.factor"] == props["transaction.state.log.min.isr"] == "1"


def test_settings_follow_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("NOC_BOOTSTRAP", "NOC_PG_DSN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NOC_KAFKA_PORT", "29092")
    monkeypatch.setenv("NOC_PG_PORT", "55999")
    monkeypatch.setenv("NOC_HOME", str(tmp_path))
    s = Settings()
    assert (s.bootstrap, s.home) == ("127.0.0.1:29092", tmp_path)
    assert s.pg_dsn == "postgresql://noc@127.0.0.1:55999/nocstream"
    monkeypatch.setenv("NOC_BOOTSTRAP", "kafka.example:9092")
    assert Settings().bootstrap == "kafka.example:9092"


def test_read_pid_ignores_garbage_missing_dead_and_recycled(tmp_path: Path) -> None:
    f = tmp_path / "x.pid"
    assert read_pid(f) is None
    f.write_text("not a pid")
    assert read_pid(f) is None
    f.write_text(f"{_dead_pid()}\n")
    assert read_pid(f) is None
    # postmaster.pid style: pid on the first line, more lines after.
    f.write_text(f"{os.getpid()}\n/some/data/dir\n1700000000\n")
    assert read_pid(f) == os.getpid()
    # A live pid whose command line is not the expected server counts as stale (recycled pid).
    assert read_pid(f, needle="kafka.Kafka") is None
    assert cmdline_has(os.getpid(), "python") or cmdline_has(os.getpid(), "pytest")


def test_port_open_sees_a_listener_and_not_a_closed_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert not port_open(port)  # bound, not listening
        s.listen()
        assert port_open(port)


def test_a_taken_port_gives_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOC_BOOTSTRAP", raising=False)
    with socket.socket() as free, socket.socket() as squatter:
        free.bind(("127.0.0.1", 0))
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        free_port, taken = free.getsockname()[1], squatter.getsockname()[1]
        # The broker port is free (closed, so no slow Kafka probe); the controller port is squatted.
        s = Settings(home=tmp_path, kafka_port=free_port, kafka_controller_port=taken)
        with pytest.raises(InfraError, match=f"port {taken} .* taken .* NOC_KAFKA_CONTROLLER_PORT"):
            kafka_up(s, log=False)


def test_exclusive_lets_one_holder_at_a_time(tmp_path: Path) -> None:
    lock = tmp_path / "up.lock"
    with exclusive(lock, timeout=1):
        with pytest.raises(InfraError, match="still holds"), exclusive(lock, timeout=0.3):
            pass
    with exclusive(lock, timeout=1):  # released: free again
        pass


def test_noc_infra_subcommands_are_registered() -> None:
    # Only this area's parser: other areas' modules are none of this test's business.
    parser = argparse.ArgumentParser(prog="noc")
    cli_infra.register(parser.add_subparsers(dest="command", required=True))
    for cmd in ("up", "down", "status"):
        assert callable(parser.parse_args(["infra", cmd]).func)
    with pytest.raises(SystemExit):
        parser.parse_args(["infra", "sideways"])


def test_traversable_follows_owner_group_and_other_bits() -> None:
    # The postgres OS user must reach the cluster's directory; a checkout under a 0700 home is out of reach.
    # Not tmp_path: pytest's base temp dir is 0700 itself, which is exactly what this function detects.
    base = Path(tempfile.mkdtemp(prefix="noc-trav-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        inner = base / "a" / "b"
        inner.mkdir(parents=True)
        st = (base / "a").stat()
        stranger, stranger_groups = st.st_uid + 4242, {st.st_gid + 4242}
        os.chmod(base / "a", 0o755)
        assert traversable(inner / "not-yet-created", stranger, stranger_groups)
        os.chmod(base / "a", 0o750)
        assert not traversable(inner, stranger, stranger_groups)
        assert traversable(inner, stranger, {st.st_gid})  # in the directory's group
        os.chmod(base / "a", 0o700)
        assert not traversable(inner, stranger, {st.st_gid})
        assert traversable(inner, st.st_uid, set())  # the owner
    finally:
        shutil.rmtree(base)


def test_jars_count_as_ready_only_for_the_pom_they_came_from(tmp_path: Path) -> None:
    kp = KafkaPaths(tmp_path)
    assert not jars_ready(kp)
    kp.lib_ok.write_text("ok\n")  # a marker from another pom (or an older format): fetch again
    assert not jars_ready(kp)
    kp.lib_ok.write_text(pom_digest() + "\n")
    assert jars_ready(kp)


def test_missing_java_or_maven_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from infra.kafka_local import fetch_jars, paths

    monkeypatch.setenv("PATH", str(tmp_path))  # neither mvn nor java on it
    with pytest.raises(InfraError, match=r"`mvn` not found: install Maven \(apt-get install maven\)"):
        fetch_jars(paths(Settings(home=tmp_path)))


def test_demo_refuses_to_start_when_its_ports_are_taken(capsys: pytest.CaptureFixture[str]) -> None:
    """A second `noc demo` would start children that die on taken ports and leave the first demo's running."""
    from infra.cli_demo import run

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        args = argparse.Namespace(port=port, seed=42, rate=2000, span="30d", duration=0, tenant=1)
        assert run(args) == 2
    err = capsys.readouterr().err
    assert str(port) in err and "another `noc demo`" in err


def test_the_demo_trains_when_no_model_or_one_of_other_features_is_active() -> None:
    from types import SimpleNamespace

    from infra.cli_demo import why_train

    assert why_train(None, "h1") == "no fraud model is active"
    assert why_train(SimpleNamespace(version="m1", feature_hash="h1"), "h1") is None
    why = why_train(SimpleNamespace(version="m0", feature_hash="h0"), "h1")
    assert why is not None and "m0" in why
