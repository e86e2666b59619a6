"""``noc gateway`` (serve the API, WebSocket and dashboard) and ``noc token create|list|revoke``."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from datetime import timedelta
from typing import Any

from gateway.config import GatewayConfig


def _config(args: argparse.Namespace) -> GatewayConfig:
    cfg = GatewayConfig()
    changes = {k: v for k, v in (("dsn", args.dsn), ("bootstrap", getattr(args, "bootstrap", None)),
                                 ("namespace", getattr(args, "namespace", None))) if v}
    if getattr(args, "origin", None):
        changes["allowed_origins"] = tuple(o.rstrip("/") for o in args.origin)
    return dataclasses.replace(cfg, **changes)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import create_app

    cfg = _config(args)
    common: dict[str, Any] = {"host": args.host, "port": args.port, "log_level": args.log_level,
                              "ws_ping_interval": 15, "ws_ping_timeout": 20, "ws_max_size": 64 * 1024,
                              "ws_per_message_deflate": False, "timeout_keep_alive": 30,
                              "access_log": args.access_log, "ws": args.ws_impl, "loop": args.loop,
                              "http": args.http}
    if args.workers > 1:
        # Worker processes build the app from the environment; each runs its own feed consumer (own group id)
        # and serves the clients the kernel hands it, as separate gateways would.
        os.environ.update({"NOC_PG_DSN": cfg.dsn, "NOC_BOOTSTRAP": cfg.bootstrap, "NOC_NAMESPACE": cfg.namespace,
                           "NOC_GATEWAY_ORIGINS": ",".join(cfg.allowed_origins)})
        uvicorn.run("gateway.app:create_app", factory=True, workers=args.workers, **common)
    else:
        uvicorn.run(create_app(cfg), **common)
    return 0


def token_create(args: argparse.Namespace) -> int:
    from gateway.tokens import create_token

    ttl = timedelta(days=args.days) if args.days else None
    try:
        token_id, token = create_token(_config(args).dsn, args.tenant, args.cap, label=args.label, ttl=ttl)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(token)
    print(f"token id {token_id} for tenant {args.tenant} ({', '.join(args.cap)}); it is shown only once",
          file=sys.stderr)
    return 0


def token_list(args: argparse.Namespace) -> int:
    from gateway.tokens import ensure_schema, list_tokens

    dsn = _config(args).dsn
    ensure_schema(dsn)
    for token_id, tenant, caps, label, created, revoked in list_tokens(dsn):
        state = f"revoked {revoked.isoformat()}" if revoked else "active"
        print(f"{token_id}  tenant={tenant}  {','.join(caps)}  {label!r}  created {created.isoformat()}  {state}")
    return 0


def token_revoke(args: argparse.Namespace) -> int:
    from gateway.tokens import revoke_token

    if revoke_token(_config(args).dsn, args.token_id):
        print(f"revoked {args.token_id}")
        return 0
    print(f"no active token {args.token_id}", file=sys.stderr)
    return 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("gateway", help="serve the REST API, the live WebSocket feed and the NOC dashboard")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--dsn", default=None, help="Postgres DSN (default NOC_PG_DSN)")
    p.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (default NOC_BOOTSTRAP)")
    p.add_argument("--namespace", default=None, help="topic namespace (default NOC_NAMESPACE or noc)")
    p.add_argument("--origin", action="append", default=None,
                   help="browser origin allowed on the WebSocket, repeatable (default NOC_GATEWAY_ORIGINS; "
                        "the gateway's own origin is always allowed)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes sharing the port; each is a full gateway with its own feed consumer")
    p.add_argument("--log-level", default="info")
    p.add_argument("--access-log", action="store_true")
    p.add_argument("--ws-impl", default="auto", choices=("auto", "websockets-sansio", "websockets", "wsproto"),
                   help="uvicorn WebSocket implementation (default auto)")
    p.add_argument("--loop", default="auto", choices=("auto", "asyncio", "uvloop"),
                   help="event loop (default auto: uvloop when installed)")
    p.add_argument("--http", default="auto", choices=("auto", "h11", "httptools"),
                   help="HTTP parser (default auto: httptools when installed)")
    p.set_defaults(func=serve)

    t = sub.add_parser("token", help="API tokens of the gateway")
    tsub = t.add_subparsers(dest="token_command", required=True)
    c = tsub.add_parser("create", help="mint a token (printed once on stdout)")
    c.add_argument("--tenant", type=int, required=True)
    c.add_argument("--cap", action="append", required=True, choices=("noc:view", "noc:manage", "noc:admin"),
                   help="capability, repeatable (manage implies view, admin implies both)")
    c.add_argument("--label", default="")
    c.add_argument("--days", type=int, default=None, help="expire after this many days (default never)")
    c.add_argument("--dsn", default=None)
    c.set_defaults(func=token_create)
    ls = tsub.add_parser("list", help="list tokens (ids only, never secrets)")
    ls.add_argument("--dsn", default=None)
    ls.set_defaults(func=token_list)
    r = tsub.add_parser("revoke", help="revoke a token by its id")
    r.add_argument("token_id")
    r.add_argument("--dsn", default=None)
    r.set_defaults(func=token_revoke)
