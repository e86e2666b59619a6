"""Small process helpers shared by the local Kafka and Postgres managers."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class InfraError(RuntimeError):
    """A local service could not be brought up; the message says what to do."""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def cmdline_has(pid: int, needle: str) -> bool:
    """Whether the process's command line mentions ``needle`` (guards against a recycled pid)."""
    try:
        return needle in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False


def read_pid(path: Path, needle: str | None = None) -> int | None:
    """The pid in a pid file, or None when the file is missing, unreadable, names a dead process, or (with
    ``needle``) names a process whose command line lacks ``needle``: the pid was recycled."""
    try:
        pid = int(path.read_text().split()[0])
    except (FileNotFoundError, PermissionError, ValueError, IndexError):
        return None
    if not pid_alive(pid):
        return None
    return pid if needle is None or cmdline_has(pid, needle) else None


@contextmanager
def exclusive(path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive flock on ``path``: concurrent ``up`` calls (parallel test sessions) take turns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise InfraError(f"another `noc infra up` still holds {path} after {timeout:.0f}s") from None
                time.sleep(0.2)  # polling the lock, bounded by the deadline
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def stop_pid(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no log at {path})"
