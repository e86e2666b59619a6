"""``noc replay``, ``noc replay diff`` and ``noc export`` (registered by infra/cli.py).

Exit codes: 0 done (diff: identical), 1 diff found differences, 2 usage or run error (message on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from schemas.topics import LIVE_NAMESPACE


def _time(text: str) -> int:
    from simulator.config import parse_time

    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (use ISO 8601, e.g. 2026-11-01T00:00Z)") from exc


def _duration(text: str) -> int:
    from simulator.config import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def register(sub: argparse._SubParsersAction) -> None:
    from infra.config import settings

    s = settings()
    p = sub.add_parser("replay", help="re-run the pipeline over a time range into a sandbox namespace (what-if)",
                       description="Replay a time range of the live inputs through the sans-I/O pipeline into a "
                                   "sandbox namespace; `noc replay diff NAME` compares it with the live outputs.")
    p.add_argument("--from", dest="from_ms", type=_time, help="start of the range (ISO 8601, inclusive)")
    p.add_argument("--to", dest="to_ms", type=_time, help="end of the range (ISO 8601, exclusive)")
    p.add_argument("--warmup", type=_duration, default=0,
                   help="first run this much input before --from for its state only, e.g. 7d (default 0: state "
                        "starts empty at --from)")
    p.add_argument("--namespace", help="the sandbox namespace to write to (never the live one)")
    p.add_argument("--procs", type=int, default=0,
                   help="processes for the person stage, each a group of partitions (default 0: one per core); "
                        "the output is the same bytes whatever the number")
    p.add_argument("--source", default=s.namespace, help=f"namespace to replay (NOC_NAMESPACE, default {s.namespace})")
    p.add_argument("--topics", default=None, help="comma-separated input topics (default: all inputs)")
    p.add_argument("--model", default=None, help="score with this registered model version (what-if)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. anomaly.threshold=4.0, fraud.threshold=0.9, correlation.window=30m")
    p.add_argument("--no-compare", action="store_true", help="what-if: do not also run the live configuration")
    p.add_argument("--sink", action="store_true",
                   help="also load the sandbox's outputs into Postgres schema replay_<namespace> (at --dsn)")
    p.add_argument("--bootstrap", default=s.bootstrap)
    p.add_argument("--dsn", default=s.pg_dsn, help="Postgres: the model registry (--model) and --sink target")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=replay_handler)
    rsub = p.add_subparsers(dest="replay_command")
    d = rsub.add_parser("diff", help="compare a sandbox's outputs with another namespace's for the replayed range")
    d.add_argument("name", help="the sandbox namespace")
    d.add_argument("--against", default=None, help="namespace to compare with (default: the replay's source)")
    d.add_argument("--from", dest="diff_from", type=_time, default=None, help="range start (default: the replay's)")
    d.add_argument("--to", dest="diff_to", type=_time, default=None, help="range end (default: the replay's)")
    d.add_argument("--limit", type=int, default=20, help="ids listed per kind and change type")
    d.add_argument("--json", dest="diff_json", action="store_true", help="print the full diff as JSON")
    d.add_argument("--bootstrap", dest="diff_bootstrap", default=s.bootstrap)
    d.set_defaults(func=diff_handler)

    e = sub.add_parser("export", help="write a topic's records over a time range to Parquet or Avro")
    e.add_argument("--topic", required=True, help="catalogue topic, e.g. attendance or fraud-scores")
    e.add_argument("--from", dest="from_ms", type=_time, default=None, help="start (inclusive; default: beginning)")
    e.add_argument("--to", dest="to_ms", type=_time, default=None, help="end (exclusive; default: now)")
    e.add_argument("--format", choices=("parquet", "avro"), required=True)
    e.add_argument("--revisions", choices=("latest", "all"), default="latest",
                   help="revised records (incidents, baselines, reference data): the latest revision of each "
                        "(default), or every revision once; either way each stable id is written once")
    e.add_argument("--namespace", default=s.namespace)
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--bootstrap", default=s.bootstrap)
    e.set_defaults(func=export_handler)


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def replay_handler(args: argparse.Namespace) -> int:
    from streams.replay import INPUT_TOPICS, ReplayRequest, run_replay
    from streams.replay_config import OverrideError, apply_overrides
    from streams.replay_io import ReplayError
    from streams.replay_metrics import render

    if args.from_ms is None or args.to_ms is None or not args.namespace:
        return _fail("noc replay needs --from, --to and --namespace (or: noc replay diff NAME)")
    from streams.replay_io import live_namespaces

    if args.namespace in live_namespaces():
        return _fail(f"refusing to replay into {args.namespace!r}, the live namespace; choose a sandbox name")
    try:
        cfg = apply_overrides(args.overrides, args.model)
    except OverrideError as exc:
        return _fail(str(exc))
    topics = tuple(t.strip() for t in args.topics.split(",") if t.strip()) if args.topics else INPUT_TOPICS
    req = ReplayRequest(args.bootstrap, args.source, args.namespace, args.from_ms, args.to_ms, cfg, topics,
                        dsn=args.dsn, compare_live=not args.no_compare, progress=None if args.quiet else sys.stderr,
                        warmup_ms=args.warmup, procs=args.procs)
    try:
        rep = run_replay(req)
        sunk = None
        if args.sink:
            from streams.replay_sink import sink_sandbox

            sunk = sink_sandbox(args.dsn, args.bootstrap, args.namespace, args.source, sorted(rep.outputs))
    except ReplayError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(rep.to_dict(), indent=2, sort_keys=True))
        return 0
    warm = f", after a warm-up from {args.warmup / 86_400_000:g} days before" if args.warmup else ""
    print(f"replay {rep.source} -> {rep.sandbox} ({cfg.describe()}{warm}): {rep.total_in:,} records in "
          f"{rep.elapsed_s:.1f}s = {rep.rate:,.0f} records/s ({rep.procs} person-stage process"
          f"{'es' if rep.procs > 1 else ''})")
    print("  in:  " + ", ".join(f"{k} {v:,}" for k, v in sorted(rep.records_in.items())))
    print("  out: " + ", ".join(f"{k} {v:,}" for k, v in sorted(rep.outputs.items())))
    if rep.dead_letters:
        print("  dead letters: " + ", ".join(f"{k} {v:,}" for k, v in sorted(rep.dead_letters.items())))
    if sunk is not None:
        print(f"  sunk: {sunk.records:,} records as {sunk.rows:,} rows into schema {sunk.schema} "
              f"in {sunk.seconds:.1f}s")
    if rep.metrics:
        print(render(rep.metrics))
    print(f"compare with: noc replay diff {rep.sandbox}")
    return 0


def diff_handler(args: argparse.Namespace) -> int:
    from streams.replay import read_manifest, read_snapshot
    from streams.replay_diff import diff, render
    from streams.replay_io import ReplayError

    manifest = read_manifest(args.name)
    from_ms = args.diff_from if args.diff_from is not None else (manifest or {}).get("from_ms")
    to_ms = args.diff_to if args.diff_to is not None else (manifest or {}).get("to_ms")
    if from_ms is None or to_ms is None:
        return _fail(f"no replay manifest for {args.name!r}: give --from and --to")
    against = args.against or (manifest or {}).get("source") or LIVE_NAMESPACE
    if against == args.name:
        return _fail("--against names the sandbox itself")
    try:
        base = read_snapshot(args.diff_bootstrap, against, int(from_ms), int(to_ms))
        other = read_snapshot(args.diff_bootstrap, args.name, int(from_ms), int(to_ms))
    except ReplayError as exc:
        return _fail(str(exc))
    report = diff(base, other, against, args.name)
    if args.diff_json:
        print(json.dumps(report.to_dict(), indent=2, sort_keys=True, default=str))
    else:
        print(render(report, args.limit))
        _print_metrics(args.name, against)
    return 0 if report.identical else 1


def _print_metrics(name: str, against: str) -> None:
    """The what-if metrics recorded by the replay (and by ``against``, when that was a replay too)."""
    from streams.replay import read_manifest
    from streams.replay_metrics import Metrics, render

    rows: list[Metrics] = []
    base = read_manifest(against)
    if base and base.get("metrics"):
        rows.append(Metrics.from_dict(base["metrics"][0]))
    mine = read_manifest(name)
    for d in (mine or {}).get("metrics") or []:
        m = Metrics.from_dict(d)
        if not any(r.name == m.name for r in rows):
            rows.append(m)
    if len(rows) >= 2:
        print("what-if metrics (recorded by the replays):")
        print(render(rows))


def export_handler(args: argparse.Namespace) -> int:
    from streams.export import export
    from streams.replay_io import ReplayError

    try:
        export(args.bootstrap, args.namespace, args.topic, args.from_ms, args.to_ms, args.format, args.out,
               revisions=args.revisions)
    except ReplayError as exc:
        return _fail(str(exc))
    return 0
