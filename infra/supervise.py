"""``noc run --restart -- <noc subcommand ...>``: keep one ``noc`` process running where no orchestrator does.

The child is ``python -m infra.cli <subcommand ...>`` in its own process group. When it exits non-zero (a crash,
a fatal loop error, a SIGKILL) it is started again after a backoff that doubles from ``--backoff`` (1 s) up to
``--max-backoff`` (30 s) and falls back to the start once a child has run ``--reset-after`` (60 s). Exit 0 ends
the supervisor with 0 (the job is done: ``--until-caught-up``); exit 2 (a usage error) is not retried.
SIGTERM and SIGINT are passed to the child, which stops gracefully (its own bound, under 30 s); the supervisor
then exits with the child's code, killing it after ``--grace`` (45 s) if it has not stopped.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

__all__ = ["RestartPolicy", "register", "supervise"]

log = logging.getLogger("noc.run")
NOT_RETRIED = (0, 2)


@dataclass(frozen=True)
class RestartPolicy:
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    reset_after_s: float = 60.0
    max_restarts: int | None = None  # None: no limit
    grace_s: float = 45.0

    def delay(self, failures: int) -> float:
        """Seconds to wait before start number ``failures + 1`` after ``failures`` consecutive failures."""
        return float(min(self.max_backoff_s, self.backoff_s * 2 ** max(0, failures - 1)))


def supervise(argv: Sequence[str], policy: RestartPolicy, restart: bool = True) -> int:
    """Run ``noc <argv>`` until it exits 0 (or 2), or the supervisor is told to stop; returns the exit code."""
    stop = threading.Event()
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: FrameType | None) -> None:
        stop.set()
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    failures = restarts = 0
    try:
        while True:
            started = time.monotonic()
            child = subprocess.Popen([sys.executable, "-m", "infra.cli", *argv], start_new_session=True)
            log.info("noc run: started `noc %s` (pid %d)", " ".join(argv), child.pid)
            code = _wait(child, stop, policy.grace_s)
            ran = time.monotonic() - started
            if stop.is_set():
                log.info("noc run: stopped; the child exited with %d", code)
                return code
            if code in NOT_RETRIED or not restart:
                log.info("noc run: the child exited with %d after %.1f s; not restarting", code, ran)
                return code
            failures = 1 if ran >= policy.reset_after_s else failures + 1
            if policy.max_restarts is not None and restarts >= policy.max_restarts:
                log.error("noc run: the child exited with %d; %d restarts used up", code, restarts)
                return code
            delay = policy.delay(failures)
            log.warning("noc run: the child exited with %d after %.1f s; restarting in %.1f s", code, ran, delay)
            if stop.wait(delay):
                return code
            restarts += 1
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _wait(child: subprocess.Popen[bytes], stop: threading.Event, grace_s: float) -> int:
    """The child's exit code; once told to stop, SIGKILL it (its whole group) after ``grace_s``."""
    deadline: float | None = None
    while True:
        try:
            return child.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            pass
        if stop.is_set() and deadline is None:
            deadline = time.monotonic() + grace_s
        if deadline is not None and time.monotonic() > deadline:
            log.error("noc run: the child did not stop within %.0f s; killing it", grace_s)
            os.killpg(child.pid, signal.SIGKILL)
            return child.wait(timeout=30)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a noc subcommand under a supervisor that restarts it when it fails",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--restart", action="store_true", help="restart the child when it exits non-zero (with backoff)")
    p.add_argument("--backoff", type=float, default=1.0, help="first restart delay, doubled per consecutive failure")
    p.add_argument("--max-backoff", type=float, default=30.0, help="longest restart delay")
    p.add_argument("--reset-after", type=float, default=60.0,
                   help="a child that ran this long before failing restarts after the first delay again")
    p.add_argument("--max-restarts", type=int, default=None, help="give up after this many restarts (default: never)")
    p.add_argument("--grace", type=float, default=45.0, help="seconds a stopping child gets before SIGKILL")
    p.add_argument("child", nargs=argparse.REMAINDER, help="-- then the noc subcommand and its flags")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    child = list(args.child)
    if child and child[0] == "--":
        child = child[1:]
    if not child:
        print("noc run: give the subcommand after --, e.g. noc run --restart -- worker", file=sys.stderr)
        return 2
    policy = RestartPolicy(args.backoff, args.max_backoff, args.reset_after, args.max_restarts, args.grace)
    return supervise(child, policy, restart=args.restart)
