"""``noc worker``: run the stream worker (Faust) against ``NOC_BOOTSTRAP`` and ``NOC_NAMESPACE``.

Also runnable without the ``noc`` entry point: ``python -m streams.cli worker --namespace t123``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from infra.config import settings

    s = settings()
    p = sub.add_parser("worker", help="run the stream worker (windows, anomalies, correlation, fraud scoring)")
    p.add_argument("--bootstrap", default=s.bootstrap, help="Kafka bootstrap servers (NOC_BOOTSTRAP)")
    p.add_argument("--namespace", default=s.namespace, help="topic namespace (NOC_NAMESPACE)")
    p.add_argument("--metrics-port", type=int, default=0,
                   help="serve Prometheus metrics on this port (0: off); with --stage all the site-stage process "
                        "serves its own on this port + 1")
    p.add_argument("--batch-size", type=int, default=5_000,
                   help="records per micro-batch (what a batch holds decoded counts in the worker's peak memory)")
    p.add_argument("--batch-within", type=float, default=0.2, help="max seconds to wait to fill a batch")
    p.add_argument("--flush-every", type=float, default=2.0,
                   help="seconds between state flushes + offset commits (also every --flush-records records)")
    p.add_argument("--flush-records", type=int, default=50_000, help="records between state flushes at most")
    p.add_argument("--data-dir", type=Path, default=s.home / "faust", help="Faust data directory")
    p.add_argument("--component", default="noc-worker", help="name written into dead letters")
    p.add_argument("--state-cache", type=int, default=100_000,
                   help="decoded states kept between batches per partition (speed vs memory; 0: none)")
    p.add_argument("--log-level", default="info")
    p.add_argument("--stage", choices=("all", "pipeline", "sites"), default="all",
                   help="all: the pipeline, plus the site stage in a child process; pipeline or sites: that stage "
                        "only (run stages separately and scale each)")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    if args.stage == "sites":  # without the pipeline's imports (Faust, the scorer)
        import logging

        from streams.site_worker import SiteSettings, run_sites

        logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
        return run_sites(SiteSettings(bootstrap=args.bootstrap, namespace=args.namespace, batch_size=args.batch_size,
                                      batch_within_s=args.batch_within, flush_every_s=args.flush_every,
                                      flush_records=args.flush_records, metrics_port=args.metrics_port))

    from streams.app import WorkerSettings, run

    return run(WorkerSettings(bootstrap=args.bootstrap, namespace=args.namespace, metrics_port=args.metrics_port,
                              batch_size=args.batch_size, batch_within_s=args.batch_within,
                              flush_every_s=args.flush_every, flush_records=args.flush_records, data_dir=args.data_dir,
                              component=args.component, log_level=args.log_level,
                              max_cached_states=args.state_cache, stage=args.stage))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streams")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
