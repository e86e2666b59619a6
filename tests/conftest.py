"""Fixtures for the real services.

- ``kafka_bootstrap`` / ``pg_dsn`` (session): with a Docker engine, testcontainers start Kafka and Postgres;
  otherwise the local infra (``noc infra up``) is started if needed and left running afterwards. If
  neither can start, the test FAILS with the reason — integration tests never skip.
- ``namespace`` (function): a unique topic namespace with every catalogued topic created; deleted after.
- ``pg_schema`` (function): ``(dsn, schema)`` where ``dsn`` sets ``search_path`` to a fresh schema; dropped
  after.
Unit tests request none of these, so they never start services.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest


def _docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.fixture(scope="session")
def _containers() -> Iterator[dict[str, Any] | None]:
    if not _docker_available():
        yield None
        return
    # Newer testcontainers moved these under ``community`` (the old paths warn); pyproject allows older ones.
    try:
        from testcontainers.community.kafka import KafkaContainer
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:
        from testcontainers.kafka import KafkaContainer
        from testcontainers.postgres import PostgresContainer

    with KafkaContainer("confluentinc/cp-kafka:7.7.1") as kafka, PostgresContainer("postgres:15", driver=None) as pg:
        dsn = pg.get_connection_url().replace("postgresql+psycopg2://", "postgresql://")
        yield {"bootstrap": kafka.get_bootstrap_server(), "dsn": dsn}


@pytest.fixture(scope="session")
def kafka_bootstrap(_containers: dict[str, Any] | None) -> str:
    if _containers is not None:
        return str(_containers["bootstrap"])
    from infra.config import settings
    from infra.kafka_local import kafka_up
    from infra.procs import InfraError

    s = settings()
    try:
        kafka_up(s, log=False)
    except InfraError as exc:
        pytest.fail(f"no Docker engine and the local Kafka broker could not start: {exc}")
    return s.bootstrap


@pytest.fixture(scope="session")
def pg_dsn(_containers: dict[str, Any] | None) -> str:
    if _containers is not None:
        return str(_containers["dsn"])
    from infra.config import settings
    from infra.postgres_local import postgres_up
    from infra.procs import InfraError

    s = settings()
    try:
        postgres_up(s, log=False)
    except InfraError as exc:
        pytest.fail(f"no Docker engine and the local Postgres could not start: {exc}")
    return s.pg_dsn


@pytest.fixture
def namespace(kafka_bootstrap: str) -> Iterator[str]:
    from infra.topics_admin import apply_topics, delete_namespace

    ns = "t" + uuid.uuid4().hex[:10]
    apply_topics(kafka_bootstrap, ns)
    yield ns
    delete_namespace(kafka_bootstrap, ns)


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[tuple[str, str]]:
    import psycopg

    schema = "t_" + uuid.uuid4().hex[:10]
    with psycopg.connect(pg_dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in pg_dsn else "?"
    yield f"{pg_dsn}{sep}options=-csearch_path%3D{schema}", schema
    with psycopg.connect(pg_dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A private three-node KRaft cluster (``infra.kafka_cluster``) on free ports in a temporary directory, for
    the fault tests that kill brokers; stopped at the end of the session. Yields its ``ClusterConfig``."""
    import random

    from infra.config import settings
    from infra.kafka_cluster import cluster_config, cluster_down, cluster_up
    from infra.procs import InfraError

    def free_run(n: int) -> int:
        # n consecutive free ports (a node's port is port + i), below Linux's ephemeral range (32768-60999): a port
        # the kernel hands out to some client's connection meanwhile would stop a node from binding it
        for _ in range(200):
            base = random.randrange(20_000, 32_000 - n)
            if all(_port_free(base + i) for i in range(n)):
                return base
        pytest.fail("no run of free ports for the test cluster")

    s = settings()
    brokers = free_run(3)
    controllers = free_run(3)
    while controllers in range(brokers - 2, brokers + 3):
        controllers = free_run(3)
    cfg = dataclasses.replace(cluster_config(s), root=tmp_path_factory.mktemp("kafka-cluster"), port=brokers,
                              controller_port=controllers)
    try:
        cluster_up(cfg, jars_from=s, log=False)
    except InfraError as exc:
        pytest.fail(f"the three-node test cluster could not start: {exc}")
    yield cfg
    cluster_down(cfg)


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
