"""Runtime settings, from environment variables with local-first defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


@dataclass(frozen=True)
class Settings:
    # Where the local Kafka jars, data dirs, logs and pid files live (git-ignored).
    home: Path = field(default_factory=lambda: Path(_env("NOC_HOME", str(REPO_ROOT / ".cache"))))
    kafka_port: int = field(default_factory=lambda: int(_env("NOC_KAFKA_PORT", "9092")))
    kafka_controller_port: int = field(default_factory=lambda: int(_env("NOC_KAFKA_CONTROLLER_PORT", "9093")))
    pg_port: int = field(default_factory=lambda: int(_env("NOC_PG_PORT", "55432")))
    namespace: str = field(default_factory=lambda: _env("NOC_NAMESPACE", "noc"))

    @property
    def bootstrap(self) -> str:
        return _env("NOC_BOOTSTRAP", f"127.0.0.1:{self.kafka_port}")

    @property
    def pg_dsn(self) -> str:
        return _env("NOC_PG_DSN", f"postgresql://noc@127.0.0.1:{self.pg_port}/nocstream")


def settings() -> Settings:
    return Settings()
