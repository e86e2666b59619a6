"""Probes of ``noc worker`` on its metrics port (``--metrics-port``; the site-stage process on the next port).

* ``/healthz``: the consuming loop went round within ``NOC_LIVENESS_S`` (30 s) or is restoring a changelog, and
  (``--stage all``) the site-stage child runs. A loop stuck in a call or dead fails it: restart the process.
* ``/readyz``: reference data loaded and the loop holds an assignment (possibly empty: more members than
  partitions) whose state is restored from the changelog. False during a rebalance and the restore after it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from infra.probes import Check, ProbeServer, metrics_addr, serve_probes

__all__ = ["loop_checks", "serve_worker_probes"]


def loop_checks(loop: Any) -> tuple[Check, Check]:
    """(alive, ready) of a :class:`streams.batch_loop.BatchLoop`."""

    def alive() -> tuple[bool, str]:
        if not loop.thread.is_alive():
            return False, "the loop thread has stopped"
        ok, detail = loop.heartbeat.check()
        return bool(ok), str(detail)

    def ready() -> tuple[bool, str]:
        if loop.ready:
            return True, f"partitions {sorted(loop.assigned)} assigned and restored"
        return False, "waiting for an assignment (joining the group, rebalancing or restoring)"

    return alive, ready


def serve_worker_probes(port: int, registry: Any, loop: Any, refs_loaded: Callable[[], bool],
                        child_alive: Callable[[], bool] | None = None) -> ProbeServer:
    alive, ready = loop_checks(loop)
    live: dict[str, Check] = {loop.name: alive}
    if child_alive is not None:
        live["site-stage process"] = lambda: (child_alive(), "running" if child_alive() else "exited")
    readiness: dict[str, Check] = {
        "references": lambda: (refs_loaded(), "loaded" if refs_loaded() else "loading"),
        loop.name: ready,
    }
    return serve_probes(port, registry, live, readiness, addr=metrics_addr("127.0.0.1"), component=loop.name)
