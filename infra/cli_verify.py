"""``noc verify``: the runbook's verification checklist against a running deployment (see :mod:`infra.verify`)."""

from __future__ import annotations

import argparse
import os
import sys

from infra.config import settings

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="run the runbook's verification checklist against a running deployment",
                       description="Checks a running deployment as the runbook's checklist does; prints each check "
                                   "with ✓/✗ and its figure; exit code 1 if any fails.")
    p.add_argument("--url", default=os.environ.get("NOC_GATEWAY_URL", "http://127.0.0.1:8080"),
                   help="the gateway (default NOC_GATEWAY_URL or http://127.0.0.1:8080)")
    p.add_argument("--token", default=os.environ.get("NOC_TOKEN"),
                   help="an API token of the tenant to check (default NOC_TOKEN; `noc demo` prints one)")
    p.add_argument("--dsn", default=None, help="Postgres, for the figures the API does not expose (default NOC_PG_DSN)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per network call (default 5)")
    p.add_argument("--ws-wait", type=float, default=30.0,
                   help="seconds to wait for a live WebSocket event (default 30)")
    p.add_argument("--poke", action="store_true",
                   help="if no event came, move one NEW ticket to OPEN (needs noc:manage) and wait for its "
                        "ticket_updated event, as the runbook's ticket-broadcast check does")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from infra.verify import Verifier, render

    if not args.token:
        print("noc verify: no token: pass --token or set NOC_TOKEN (`noc token create --tenant 1 --cap noc:view`)",
              file=sys.stderr)
        return 2
    checks = Verifier(args.url, args.token, args.dsn or settings().pg_dsn, timeout_s=args.timeout,
                      ws_wait_s=args.ws_wait, poke=args.poke).run()
    print(render(checks))
    failed = [c for c in checks if not c.ok]
    print(f"\n{len(checks) - len(failed)} of {len(checks)} checks passed")
    return 1 if failed else 0
