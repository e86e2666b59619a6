"""Postgres for nocstream: the server at ``NOC_PG_DSN`` when it answers, else a project-owned cluster.

The local cluster lives under ``$NOC_HOME/pg`` (data, socket dir, log), listens on 127.0.0.1 only with
trust auth, and is run by the ``postgres`` OS user when we are root (initdb refuses root).
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psycopg

from infra.config import Settings
from infra.procs import InfraError, exclusive, port_open, read_pid, tail

START_TIMEOUT_S = 60.0


def _find_bin_dir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _install_server(say: Callable[[str], None]) -> None:
    """apt-get install Debian's postgresql (a fresh CI machine lacks it; we run as root there)."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise InfraError("PostgreSQL server binaries not found: install them (sudo apt-get install postgresql, or "
                         "run infra/bootstrap.sh as root), or point NOC_PG_DSN at a running server")
    say("installing PostgreSQL with apt-get (first run only)...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "postgresql"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
        if proc.returncode != 0:
            raise InfraError(f"`{' '.join(cmd)}` failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")


def _bin_dir(say: Callable[[str], None] | None = None) -> Path:
    """The server binaries; with ``say``, install them when missing."""
    found = _find_bin_dir()
    if found is None and say is not None:
        _install_server(say)
        found = _find_bin_dir()
    if found is None:
        raise InfraError("PostgreSQL server binaries not found: run `noc infra up` as root (it installs them), "
                         "or apt-get install postgresql, or point NOC_PG_DSN at a running server")
    return found


def traversable(path: Path, uid: int, gids: set[int]) -> bool:
    """Whether user ``uid`` (in groups ``gids``) may enter every existing directory on the way to ``path``."""
    for d in (path, *path.parents):
        try:
            st = d.stat()
        except FileNotFoundError:
            continue  # created later by us, world-traversable
        if st.st_uid == uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid in gids:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            return False
    return True


def _root(s: Settings) -> Path:
    local = s.home / "pg"
    if os.geteuid() != 0:
        return local
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        return local  # no server installed yet; `up` installs it, which creates the user
    if traversable(s.home, pw.pw_uid, set(os.getgrouplist(pw.pw_name, pw.pw_gid))):
        return local
    # A checkout under /root (mode 700) is out of the postgres user's reach: keep the cluster elsewhere,
    # at a path fixed per project home so later calls find it again.
    digest = hashlib.sha1(str(s.home.resolve()).encode()).hexdigest()[:10]
    return Path("/var/tmp") / f"nocstream-pg-{digest}"


def _as_owner(cmd: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a server binary as the ``postgres`` user when we are root (it refuses to run as root)."""
    full = list(cmd)
    if os.geteuid() == 0:
        full = ["runuser", "-u", "postgres", "--", *full]
    return subprocess.run(full, capture_output=True, text=True, timeout=timeout)


def answers(dsn: str, timeout: int = 3) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=timeout) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


def _quiet(_msg: str) -> None:
    pass


def _admin_dsn(s: Settings) -> str:
    return f"host=127.0.0.1 port={s.pg_port} user=postgres dbname=postgres connect_timeout=5"


def postgres_pid(s: Settings) -> int | None:
    # The needle rejects a recycled pid, so a stale postmaster.pid never blocks a start.
    return read_pid(_root(s) / "data" / "postmaster.pid", needle="postgres")


def _init(s: Settings, bindir: Path) -> None:
    root = _root(s)
    data = root / "data"
    if (data / "PG_VERSION").exists():
        return
    # initdb writes PG_VERSION early; a data dir without it is an interrupted initdb of ours: start over.
    shutil.rmtree(data, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    (root / "run").mkdir(exist_ok=True)
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        for p in (root, root / "run"):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    proc = _as_owner([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                      "--locale=C.UTF-8"], timeout=180)
    if proc.returncode != 0:
        raise InfraError(f"initdb failed:\n{proc.stdout}{proc.stderr}")
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(f"\n# nocstream local cluster\nlisten_addresses = '127.0.0.1'\nport = {s.pg_port}\n"
                   f"unix_socket_directories = '{root / 'run'}'\nshared_buffers = 256MB\nmax_connections = 200\n"
                   "fsync = on\nsynchronous_commit = on\n")


def postgres_up(s: Settings, log: bool = True) -> float:
    """Make sure a Postgres answers at ``s.pg_dsn`` with the ``nocstream`` database; return seconds spent."""
    t0 = time.monotonic()
    say: Callable[[str], None] = print if log else _quiet
    if answers(s.pg_dsn):
        say(f"postgres already answering at {s.pg_dsn}")
        return 0.0
    if os.environ.get("NOC_PG_DSN"):
        raise InfraError(f"NOC_PG_DSN={s.pg_dsn} does not answer; start that server or unset NOC_PG_DSN "
                         "to use a local cluster")
    # Parallel test sessions may call this at once: one initdb/start at a time.
    with exclusive(s.home / "pg.up.lock", timeout=START_TIMEOUT_S * 4):
        bindir = _bin_dir(say)
        _init(s, bindir)
        data = _root(s) / "data"
        logfile = _root(s) / "postgres.log"
        if postgres_pid(s) is None:
            (data / "postmaster.pid").unlink(missing_ok=True)  # stale after a crash or SIGKILL
            if port_open(s.pg_port):
                raise InfraError(f"port {s.pg_port} on 127.0.0.1 is taken by another process; stop it or set "
                                 "NOC_PG_PORT (or NOC_PG_DSN to use that server)")
            if os.geteuid() == 0 and not logfile.exists():
                logfile.touch()
                pw = pwd.getpwnam("postgres")
                os.chown(logfile, pw.pw_uid, pw.pw_gid)
            proc = _as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(logfile), "-w", "-t",
                              str(int(START_TIMEOUT_S)), "start"], timeout=START_TIMEOUT_S + 10)
            if proc.returncode != 0:
                raise InfraError(f"postgres did not start:\n{proc.stdout}{proc.stderr}\n{tail(logfile)}")
        _ensure_database(s)
    took = time.monotonic() - t0
    say(f"postgres up at {s.pg_dsn} in {took:.1f}s (data {data}, log {logfile})")
    return took


def _ensure_database(s: Settings) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not answers(_admin_dsn(s)):
        if time.monotonic() > deadline:
            raise InfraError(f"postgres does not answer on port {s.pg_port}:\n{tail(_root(s) / 'postgres.log')}")
        time.sleep(0.3)  # polling readiness, bounded by the deadline
    with psycopg.connect(_admin_dsn(s), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'noc'").fetchone() is None:
            conn.execute("CREATE ROLE noc SUPERUSER LOGIN")
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = 'nocstream'").fetchone() is None:
            conn.execute("CREATE DATABASE nocstream OWNER noc")


def postgres_down(s: Settings) -> bool:
    if postgres_pid(s) is None:
        return False
    proc = _as_owner([str(_bin_dir() / "pg_ctl"), "-D", str(_root(s) / "data"), "-m", "fast", "-w", "stop"],
                     timeout=120)
    if proc.returncode != 0:
        raise InfraError(f"pg_ctl stop failed: {proc.stdout}{proc.stderr}")
    return True


def postgres_restart(s: Settings) -> None:
    """Stop and start the local cluster (the sinks' fault test restarts Postgres mid-run)."""
    postgres_down(s)
    postgres_up(s, log=False)


def postgres_status(s: Settings) -> str:
    pid = postgres_pid(s)
    where = f"pid {pid}, data {_root(s) / 'data'}, log {_root(s) / 'postgres.log'}"
    if answers(s.pg_dsn):
        return f"postgres: running at {s.pg_dsn} ({where if pid else 'external server'})"
    return "postgres: stopped" if pid is None else f"postgres: not answering at {s.pg_dsn} ({where})"
