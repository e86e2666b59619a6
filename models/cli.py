"""``noc train`` and ``noc model list|activate|rollback|retrain-loop``."""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from typing import TYPE_CHECKING

from infra.config import settings

if TYPE_CHECKING:
    from models.jobs import TrainJob
    from models.registry import Registry

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``6h``, ``7d``, ``1w`` -> seconds."""
    m = _DURATION.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30m, 6h or 7d")
    return float(m.group(1)) * _SECONDS[m.group(2)]


def _until(text: str) -> int:
    """Epoch milliseconds, or an ISO date/time (UTC unless it carries an offset)."""
    if text.isdigit():
        return int(text)
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def _services(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn an unreachable Kafka or Postgres into one clear line and exit code 1, not a traceback."""

    @wraps(fn)
    def run(args: argparse.Namespace) -> int:
        import psycopg
        from confluent_kafka import KafkaException

        s = settings()
        try:
            return fn(args)
        except KafkaException as exc:
            where = getattr(args, "bootstrap", None) or s.bootstrap
            print(f"error: Kafka at {where}: {exc.args[0] if exc.args else exc} "
                  "(is it up? `noc infra status`; or pass --bootstrap)", file=sys.stderr)
        except psycopg.OperationalError as exc:
            print(f"error: Postgres registry: {str(exc).strip().splitlines()[0]} "
                  "(is it up? `noc infra status`; or pass --dsn / set NOC_PG_DSN)", file=sys.stderr)
        return 1

    return run


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (default NOC_BOOTSTRAP)")
    p.add_argument("--namespace", default=None, help="topic namespace (default NOC_NAMESPACE or noc)")
    p.add_argument("--dsn", default=None, help="Postgres DSN of the registry (default NOC_PG_DSN)")


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tenant", type=int, default=None, help="tenant to train for (default: a global model)")
    p.add_argument("--days", type=int, default=180, help="history window in days (default 180)")
    p.add_argument("--until", type=_until, default=None, help="end of the window: epoch ms or ISO time (default now)")
    p.add_argument("--test-size", type=float, default=0.2, help="newest share held out for evaluation (default 0.2)")
    p.add_argument("--algo", choices=("xgboost", "lightgbm", "auto"), default="auto",
                   help="auto trains both and keeps the better holdout PR-AUC (default)")
    p.add_argument("--from-sim", type=int, default=None, metavar="SEED",
                   help="learn from the in-memory simulator with this seed instead of Kafka")
    p.add_argument("--sim-variation", default="randomised",
                   help="with --from-sim: how frauds and look-alikes are drawn (simulator/variation.py; default "
                        "randomised, the wide training ranges; standard is the simulator's default world)")
    p.add_argument("--eval-shifted", type=float, default=0.0, metavar="DAYS",
                   help="also score the model on DAYS of each held-out shifted simulator variation (default off)")
    p.add_argument("--no-register", action="store_true", help="only train and report (no registry, no artifact)")
    p.add_argument("--trees", type=int, default=200)
    p.add_argument("--depth", type=int, default=6)
    _common(p)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a fraud model from history and register it")
    _train_args(p)
    p.add_argument("--auto-activate", action="store_true",
                   help="activate the new model if it beats the active one on the same holdout")
    p.set_defaults(func=_services(_train))

    m = sub.add_parser("model", help="fraud model registry")
    msub = m.add_subparsers(dest="model_command", required=True)
    ls = msub.add_parser("list", help="list registered models")
    ls.add_argument("--tenant", type=int, default=None, help="only this tenant's models")
    ls.add_argument("--global", dest="global_only", action="store_true", help="only global models")
    ls.add_argument("--json", action="store_true", help="one JSON array (for scripts), not the table")
    _common(ls)
    ls.set_defaults(func=_services(_list))
    act = msub.add_parser("activate", help="make VERSION its tenant's active model and notify the workers")
    act.add_argument("version")
    _common(act)
    act.set_defaults(func=_services(_activate))
    rb = msub.add_parser("rollback", help="re-activate the model active before the current one")
    rb.add_argument("--tenant", type=int, default=None, help="tenant (default: the global model)")
    _common(rb)
    rb.set_defaults(func=_services(_rollback))
    loop = msub.add_parser("retrain-loop", help="retrain on a schedule; activate only models that beat the active")
    loop.add_argument("--every", type=parse_duration, default=parse_duration("7d"), help="period (default 7d)")
    loop.add_argument("--runs", type=int, default=0, help="stop after this many runs (default: forever)")
    _train_args(loop)
    loop.set_defaults(func=_retrain_loop, auto_activate=True)


def _job(args: argparse.Namespace) -> TrainJob:
    from models.jobs import TrainJob
    from models.train import TrainConfig

    s = settings()
    return TrainJob(tenant=args.tenant, days=args.days, test_size=args.test_size, algo=args.algo,
                    until_ms=args.until, from_sim=args.from_sim, sim_variation=args.sim_variation,
                    shifted_days=args.eval_shifted, register=not args.no_register,
                    auto_activate=args.auto_activate, bootstrap=args.bootstrap or s.bootstrap,
                    namespace=args.namespace or s.namespace, dsn=args.dsn or s.pg_dsn, models_dir=s.home / "models",
                    config=TrainConfig(n_trees=args.trees, max_depth=args.depth))


def _train(args: argparse.Namespace) -> int:
    from models.history import HistoryError
    from models.jobs import run_training
    from models.train import TrainingDataError

    try:
        run_training(_job(args))
    except TrainingDataError as exc:
        hint = "" if args.from_sim is not None else (
            " With simulated data: simulate a longer --span (e.g. 30d) or a higher --scenario-rate.")
        print(f"refusing to train: {exc}{hint}", file=sys.stderr)
        return 2
    except HistoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _retrain_loop(args: argparse.Namespace) -> int:
    runs = 0
    while True:
        started = time.monotonic()
        print(f"retrain run {runs + 1} at {datetime.now(UTC):%Y-%m-%d %H:%M:%SZ}", flush=True)
        rc = _services(_train)(args)
        runs += 1
        if rc != 0:
            print("retrain run did not produce a model (see above); trying again next period", flush=True)
        if args.runs and runs >= args.runs:
            return 0
        wait = max(0.0, args.every - (time.monotonic() - started))
        print(f"next retrain in {wait / 3600:.1f} h", flush=True)
        time.sleep(wait)


def _registry(args: argparse.Namespace) -> Registry:
    from models.registry import Registry

    return Registry(args.dsn or settings().pg_dsn)


def _list(args: argparse.Namespace) -> int:
    reg = _registry(args)
    if args.tenant is not None or args.global_only:
        rows = reg.list(args.tenant, all_tenants=False)
    else:
        rows = reg.list()
    if args.json:
        import json

        print(json.dumps([{**{k: getattr(r, k) for k in ("version", "tenant_id", "algorithm", "is_active",
                                                          "metrics", "feature_hash", "artifact_path",
                                                          "artifact_sha256")},
                           "trained_at": r.trained_at.isoformat(),
                           "activated_at": r.activated_at.isoformat() if r.activated_at else None} for r in rows],
                         indent=1))
        return 0
    print(f"{'':1} {'version':32} {'tenant':>6} {'algorithm':9} {'PR-AUC':>7} {'P@80R':>7} {'ROC-AUC':>7} "
          f"{'P@0.80':>7} {'R@0.80':>7} {'train':>7} {'trained at (UTC)':20}")
    for r in rows:
        m = r.metrics
        print(f"{'*' if r.is_active else ' '} {r.version:32} {'-' if r.tenant_id is None else r.tenant_id:>6} "
              f"{r.algorithm:9} {_f(m.get('pr_auc'))} {_f(m.get('precision_at_80_recall'))} {_f(m.get('roc_auc'))} "
              f"{_f(m.get('ticket_precision'))} {_f(m.get('ticket_recall'))} "
              f"{m.get('train_size', 0):>7} {r.trained_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}")
    if not rows:
        print("(no models registered: run noc train)")
    else:
        print("P@0.80 / R@0.80: the expected precision and recall of the tickets the model opens (score >= 0.80), "
              "measured on its holdout with calibration cross-fitted")
    return 0


def _f(v: object) -> str:
    return f"{v:7.4f}" if isinstance(v, float) else f"{'-':>7}"


def _activate(args: argparse.Namespace) -> int:
    from models.jobs import activate
    from models.registry import RegistryError

    reg = _registry(args)
    s = settings()
    try:
        activate(reg, args.version, args.bootstrap or s.bootstrap, args.namespace or s.namespace, sys.stdout)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from models.jobs import rollback
    from models.registry import RegistryError

    reg = _registry(args)
    s = settings()
    try:
        rollback(reg, args.tenant, args.bootstrap or s.bootstrap, args.namespace or s.namespace, sys.stdout)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
