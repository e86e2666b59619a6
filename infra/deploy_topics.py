"""The topic catalogue (``schemas/topics.py``) as the Helm chart's Strimzi KafkaTopic input.

``python -m infra.deploy_topics`` rewrites ``deploy/helm/nocstream/files/topics.json``; ``--check`` exits 1 when
the file is not what the catalogue gives (tests/unit/test_deploy.py runs the same comparison). Topics are declared
for a production cluster: three replicas, ``min.insync.replicas=2``, unclean leader election off
(``infra.topics_admin.durability``).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from infra.config import REPO_ROOT
from infra.topics_admin import durability
from schemas.topics import CATALOGUE

__all__ = ["TOPICS_JSON", "catalogue_topics", "main", "render"]

TOPICS_JSON = REPO_ROOT / "deploy" / "helm" / "nocstream" / "files" / "topics.json"
PRODUCTION_BROKERS = 3


def catalogue_topics() -> list[dict[str, Any]]:
    dur = durability(PRODUCTION_BROKERS)
    return [{"short": s.short, "partitions": s.partitions, "replicas": dur.replication_factor,
             "config": {**s.config(), **dur.config}} for s in CATALOGUE]


def render() -> str:
    return json.dumps(catalogue_topics(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--check" in args:
        same = TOPICS_JSON.exists() and TOPICS_JSON.read_text() == render()
        print(f"{TOPICS_JSON}: {'matches' if same else 'differs from'} schemas/topics.py")
        return 0 if same else 1
    TOPICS_JSON.write_text(render())
    print(f"wrote {TOPICS_JSON} ({len(CATALOGUE)} topics)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
