"""Model registry in Postgres (tables from sinks/migrations/060_models.sql) and model_event publishing.

Activation is one transaction (the unique partial index allows one active model per tenant); the
model_event is published after the commit, and activating the already-active version publishes again,
so a failed publish is repaired by running the same command once more.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from models.artifact import Artifact

MIGRATION = Path(__file__).resolve().parent.parent / "sinks" / "migrations" / "060_models.sql"
_COLUMNS = ("version, tenant_id, algorithm, metrics, feature_names, feature_hash, artifact_path, artifact_sha256, "
            "trained_at, is_active, activated_at")


class RegistryError(ValueError):
    """A registry request that cannot be carried out (unknown version, nothing to roll back to)."""


@dataclass(frozen=True, slots=True)
class ModelRow:
    version: str
    tenant_id: int | None
    algorithm: str
    metrics: dict[str, Any]
    feature_names: list[str]
    feature_hash: str
    artifact_path: str
    artifact_sha256: str
    trained_at: datetime
    is_active: bool
    activated_at: datetime | None


def model_event_record(row: ModelRow, action: str, at_ms: int) -> dict[str, Any]:
    """The model_event announcing that ``row`` is now the tenant's model (``action`` ACTIVATED|ROLLED_BACK)."""
    return {"tenant_id": row.tenant_id, "action": action, "model_version": row.version, "algorithm": row.algorithm,
            "artifact_path": row.artifact_path, "artifact_sha256": row.artifact_sha256,
            "feature_hash": row.feature_hash, "occurred_at": at_ms}


def tenant_key(tenant_id: int | None) -> bytes:
    """Key of the compacted model-events topic: one retained event per tenant (and one global)."""
    return b"global" if tenant_id is None else str(tenant_id).encode()


def publish_model_event(bootstrap: str, namespace: str, event: dict[str, Any], timeout: float = 30.0) -> None:
    from confluent_kafka import KafkaException, Producer

    from schemas.serde import encode
    from schemas.topics import topic

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    errors: list[str] = []

    def _done(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    producer.produce(topic("model-events", namespace), key=tenant_key(event["tenant_id"]),
                     value=encode("model_event", event), timestamp=event["occurred_at"], on_delivery=_done)
    if producer.flush(timeout) != 0 or errors:
        raise KafkaException(f"model_event not delivered: {errors or 'timeout'}")


class Registry:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._schema_ready = False

    def _connect(self) -> psycopg.Connection[dict[str, Any]]:
        conn = psycopg.connect(self.dsn, row_factory=dict_row, connect_timeout=10)
        if not self._schema_ready:
            conn.execute(MIGRATION.read_text())  # idempotent DDL; independent of the sinks' migration runner
            conn.commit()
            self._schema_ready = True
        return conn

    def register(self, art: Artifact, artifact_path: Path, sha256: str, tenant_id: int | None,
                 metrics: dict[str, Any], trained_at: datetime) -> ModelRow:
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO models (version, tenant_id, algorithm, metrics, feature_names, feature_hash, "
                "artifact_path, artifact_sha256, trained_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (version) DO NOTHING",
                (art.version, tenant_id, art.algorithm, json.dumps(_finite(metrics)),
                 json.dumps(list(art.feature_names)), art.feature_hash, str(artifact_path), sha256, trained_at))
        row = self.get(art.version)
        assert row is not None
        return row

    def get(self, version: str) -> ModelRow | None:
        with self._connect() as conn:
            r = conn.execute(f"SELECT {_COLUMNS} FROM models WHERE version = %s", (version,)).fetchone()
        return ModelRow(**r) if r else None

    def list(self, tenant_id: int | None = None, all_tenants: bool = True) -> list[ModelRow]:
        """Models newest first: every tenant's, or only ``tenant_id``'s (None = the global ones)."""
        with self._connect() as conn:
            if all_tenants:
                rows = conn.execute(f"SELECT {_COLUMNS} FROM models ORDER BY tenant_id NULLS FIRST, trained_at DESC")
            else:
                rows = conn.execute(f"SELECT {_COLUMNS} FROM models WHERE tenant_id IS NOT DISTINCT FROM %s "
                                    "ORDER BY trained_at DESC", (tenant_id,))
            return [ModelRow(**r) for r in rows.fetchall()]

    def active(self, tenant_id: int | None) -> ModelRow | None:
        with self._connect() as conn:
            r = conn.execute(f"SELECT {_COLUMNS} FROM models WHERE is_active AND tenant_id IS NOT DISTINCT FROM %s",
                             (tenant_id,)).fetchone()
        return ModelRow(**r) if r else None

    def activate(self, version: str, action: str = "ACTIVATED", previous: str | None = None,
                 keep_previous: bool = False) -> ModelRow:
        """Make ``version`` its tenant's active model; record which one it replaced (for rollback)."""
        with self._connect() as conn, conn.transaction():
            r = conn.execute("SELECT tenant_id FROM models WHERE version = %s", (version,)).fetchone()
            if r is None:
                raise RegistryError(f"no model version {version!r}")
            tenant = r["tenant_id"]
            # Serialise activations of one tenant, including when none is active yet (no row to lock).
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('models'), %s)",
                         (-1 if tenant is None else int(tenant) % 2_000_000_000,))
            cur = conn.execute("SELECT version FROM models WHERE is_active AND tenant_id IS NOT DISTINCT FROM %s",
                               (tenant,)).fetchone()
            current = cur["version"] if cur else None
            if current != version:
                conn.execute("UPDATE models SET is_active = FALSE WHERE is_active "
                             "AND tenant_id IS NOT DISTINCT FROM %s", (tenant,))
                conn.execute("UPDATE models SET is_active = TRUE, activated_at = now() WHERE version = %s", (version,))
                conn.execute("INSERT INTO model_activations (tenant_id, version, previous_version, action) "
                             "VALUES (%s, %s, %s, %s)", (tenant, version, previous if keep_previous else current,
                                                         action))
        row = self.get(version)
        assert row is not None
        return row

    def rollback(self, tenant_id: int | None) -> ModelRow:
        """Re-activate the model that was active before the current one of ``tenant_id``."""
        with self._connect() as conn:
            cur = conn.execute("SELECT version FROM models WHERE is_active AND tenant_id IS NOT DISTINCT FROM %s",
                               (tenant_id,)).fetchone()
            if cur is None:
                raise RegistryError(f"no active model for {_scope(tenant_id)}")
            prev = _previous_of(conn, cur["version"])
            if prev is None:
                raise RegistryError(f"{cur['version']} is the first model activated for {_scope(tenant_id)}: "
                                    "nothing to roll back to")
            before_prev = _previous_of(conn, prev)
        # The rolled-back-to model's own predecessor becomes the next rollback target.
        return self.activate(prev, "ROLLED_BACK", previous=before_prev, keep_previous=True)


def _previous_of(conn: psycopg.Connection[dict[str, Any]], version: str) -> str | None:
    r = conn.execute("SELECT previous_version FROM model_activations WHERE version = %s ORDER BY id DESC LIMIT 1",
                     (version,)).fetchone()
    return r["previous_version"] if r else None


def _scope(tenant_id: int | None) -> str:
    return "the global scope" if tenant_id is None else f"tenant {tenant_id}"


def _finite(v: Any) -> Any:
    """JSONB has no NaN/Infinity: store them as null."""
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v
