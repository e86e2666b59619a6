"""``noc topics apply|list``."""

from __future__ import annotations

import argparse

from infra.config import settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("topics", help="create or list the catalogued Kafka topics")
    tsub = p.add_subparsers(dest="topics_command", required=True)
    for name, func, helptext in (("apply", _apply, "create/align every catalogued topic (idempotent)"),
                                 ("list", _list, "list topics with partitions and catalogue entry")):
        sp = tsub.add_parser(name, help=helptext)
        sp.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (default NOC_BOOTSTRAP)")
        sp.add_argument("--namespace", default=None, help="topic namespace (default NOC_NAMESPACE or noc)")
        sp.set_defaults(func=func)


def _apply(args: argparse.Namespace) -> int:
    from infra.topics_admin import apply_topics

    s = settings()
    ns = args.namespace or s.namespace
    created = apply_topics(args.bootstrap or s.bootstrap, ns)
    print(f"topics in namespace {ns!r}: {len(created)} created" + (": " + ", ".join(created) if created else
                                                                    " (all present)"))
    return 0


def _list(args: argparse.Namespace) -> int:
    from infra.topics_admin import list_topics

    s = settings()
    rows = list_topics(args.bootstrap or s.bootstrap, args.namespace)
    print(f"{'topic':42} {'parts':>5}  {'cleanup':8} {'retention':>10}  schema")
    for t in rows:
        if t.spec is None:
            print(f"{t.name:42} {t.partitions:>5}  (not in the catalogue)")
            continue
        days = "forever" if t.spec.retention_ms < 0 else f"{t.spec.retention_ms // 86_400_000}d"
        print(f"{t.name:42} {t.partitions:>5}  {t.spec.cleanup_policy:8} {days:>10}  {t.spec.schema}")
    return 0
