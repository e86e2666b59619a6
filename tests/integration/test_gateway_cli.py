"""``noc token create|list|revoke`` against the real Postgres: the token is printed once and stored hashed."""

from __future__ import annotations

import hashlib

import psycopg
import pytest

from infra.cli import main

pytestmark = pytest.mark.integration


def test_token_commands(pg_schema: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    dsn, _ = pg_schema
    assert main(["token", "create", "--tenant", "7", "--cap", "noc:manage", "--label", "demo", "--dsn", dsn]) == 0
    out = capsys.readouterr()
    token = out.out.strip()
    assert token.startswith("noc_") and "shown only once" in out.err
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        rows = conn.execute("SELECT token_hash, token_id, tenant_id, capabilities FROM gateway_tokens").fetchall()
    assert len(rows) == 1
    stored_hash, token_id, tenant, caps = rows[0]
    assert stored_hash == hashlib.sha256(token.encode()).hexdigest() and tenant == 7
    assert sorted(caps) == ["noc:manage", "noc:view"]
    assert token not in str(rows)  # only the hash is stored
    assert main(["token", "list", "--dsn", dsn]) == 0
    listed = capsys.readouterr().out
    assert token_id in listed and "active" in listed and token not in listed
    assert main(["token", "revoke", token_id, "--dsn", dsn]) == 0
    assert main(["token", "revoke", token_id, "--dsn", dsn]) == 1
    with pytest.raises(SystemExit):
        main(["token", "create", "--tenant", "1", "--cap", "noc:root", "--dsn", dsn])
