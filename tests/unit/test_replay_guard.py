"""A replay can only write to its sandbox: the namespace check and the per-topic guard."""

from __future__ import annotations

import pytest

from streams.replay_io import ReplayError, SandboxProducer, check_sandbox, guard_topic


@pytest.mark.parametrize("ns", ["noc", "", "a.b"])
def test_live_or_malformed_sandbox_is_refused(ns: str) -> None:
    with pytest.raises(ReplayError):
        check_sandbox(ns, "src")


def test_sandbox_equal_to_source_is_refused() -> None:
    with pytest.raises(ReplayError, match="into itself"):
        check_sandbox("src", "src")


def test_env_live_namespace_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOC_NAMESPACE", "prod")
    with pytest.raises(ReplayError, match="live namespace"):
        check_sandbox("prod", "other")
    with pytest.raises(ReplayError):
        guard_topic("prod.anomalies", "prod")


@pytest.mark.parametrize("name", ["noc.anomalies", "src.anomalies", "sbx2.anomalies", "sbxanomalies", "anomalies"])
def test_guard_refuses_topics_outside_the_sandbox(name: str) -> None:
    with pytest.raises(ReplayError, match="refused"):
        guard_topic(name, "sbx")


def test_guard_accepts_sandbox_topics() -> None:
    guard_topic("sbx.anomalies", "sbx")
    guard_topic("sbx.ref.sites", "sbx")


def test_producer_refuses_before_connecting() -> None:
    with pytest.raises(ReplayError, match="live namespace"):
        SandboxProducer("127.0.0.1:1", "noc", "src")


def test_producer_refuses_foreign_topic_names() -> None:
    p = SandboxProducer("127.0.0.1:1", "sbx", "src", flush_timeout_s=0.1)
    assert p.name("anomalies") == "sbx.anomalies"
    with pytest.raises(ReplayError, match="refused"):
        p.produce("noc.anomalies", b"k", b"v", 0)
    with pytest.raises(ReplayError, match="refused"):
        p.produce("src.incidents", b"k", b"v", 0)
    assert p.produced == 0 and p.topics_written == set()
