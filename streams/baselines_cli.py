"""``noc baselines retune``: ask the worker's site stage to retune the baselines' thresholds now.

The scheduled retune runs in window event time (weekly by default); this is the on-demand one. It writes a
control record to every partition of the worker's internal site topic; each site partition retunes its sites
(optionally one tenant / one site) stamped with its watermark (event time), and publishes the changed
baselines on ``<namespace>.baselines``.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from infra.config import settings

    s = settings()
    p = sub.add_parser("baselines", help="site baselines (self-tuning anomaly thresholds)")
    inner = p.add_subparsers(dest="baselines_command", required=True)
    r = inner.add_parser("retune", help="retune thresholds now (on demand; the schedule is weekly)")
    r.add_argument("--bootstrap", default=s.bootstrap, help="Kafka bootstrap servers (NOC_BOOTSTRAP)")
    r.add_argument("--namespace", default=s.namespace, help="topic namespace (NOC_NAMESPACE)")
    r.add_argument("--tenant", type=int, default=None, help="only this tenant's sites")
    r.add_argument("--site", default=None, help="only this site (with --tenant)")
    r.set_defaults(func=retune)


def retune(args: argparse.Namespace) -> int:
    from streams.site_stage import request_retune

    n = request_retune(args.bootstrap, args.namespace, args.tenant, args.site)
    print(f"retune requested on {n} site partitions of {args.namespace}; the worker's site stage logs each one it "
          f"does and counts the sites in noc_worker_site_stage_records{{kind=\"retuned_sites\"}}; the retuned "
          f"baselines go to {args.namespace}.baselines")
    return 0
