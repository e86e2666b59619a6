"""A consuming thread that fails stops the whole worker with exit code 1 (a supervisor restarts it and Kafka
redelivers from the last commit) instead of leaving a process that looks alive and does nothing."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from simulator.config import HOUR_MS, SimConfig
from simulator.produce import simulate
from streams.testkit import WorkerProcess, free_port, wait_for

pytestmark = pytest.mark.integration

SCRIPT = """
import sys
from pathlib import Path
from streams import app
from streams.core.pipeline import Pipeline

def boom(self, *args, **kwargs):
    raise RuntimeError("boom: injected pipeline failure")

Pipeline.process = boom
sys.exit(app.run(app.WorkerSettings(bootstrap={bootstrap!r}, namespace={namespace!r}, data_dir=Path({data!r}))))
"""


def test_a_failing_input_loop_stops_the_worker_with_exit_code_1(kafka_bootstrap: str, namespace: str,
                                                               tmp_path: Path) -> None:
    cfg = SimConfig(seed=5, tenants=1, sites_per_tenant=1, guards_per_site=2, span=10 * HOUR_MS)
    assert simulate(cfg, kafka_bootstrap, namespace, progress=None).ok
    script = tmp_path / "failing_worker.py"
    script.write_text(SCRIPT.format(bootstrap=kafka_bootstrap, namespace=namespace, data=str(tmp_path / "faust")))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out[-3000:]
    assert "boom: injected pipeline failure" in out and "a loop failed" in out, out[-3000:]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"  # dead, not yet reaped


def test_a_killed_worker_takes_its_site_stage_process_with_it(kafka_bootstrap: str, namespace: str,
                                                              tmp_path: Path) -> None:
    """SIGKILL of the worker (a crash) must not leave its site stage consuming as an orphan in the group."""
    log = tmp_path / "worker.log"
    w = WorkerProcess(namespace, kafka_bootstrap, tmp_path / "faust", free_port(), log).start()
    try:
        wait_for(lambda: "site stage process started" in log.read_text(errors="replace"), 120,
                 "the site stage process to start")
        m = re.search(r"site stage process started \(pid (\d+)\)", log.read_text(errors="replace"))
        assert m is not None
        child = int(m.group(1))
        assert not _gone(child)
        w.kill()
        wait_for(lambda: _gone(child), 30, "the site stage process to die with the worker")
    finally:
        w.stop()


def test_a_dead_site_stage_process_stops_the_worker_with_exit_code_1(kafka_bootstrap: str, namespace: str,
                                                                     tmp_path: Path) -> None:
    """The site stage runs in a child process: if it dies (here SIGKILL), the worker does not carry on
    without it (SITE windows and baselines would silently stop): it exits 1, and a restart starts both."""
    log = tmp_path / "worker.log"
    w = WorkerProcess(namespace, kafka_bootstrap, tmp_path / "faust", free_port(), log).start()
    try:
        pids: list[int] = []

        def child_started() -> bool:
            m = re.search(r"site stage process started \(pid (\d+)\)", log.read_text(errors="replace"))
            if m:
                pids.append(int(m.group(1)))
            return bool(m)

        wait_for(child_started, 120, "the site stage process to start")
        wait_for(lambda: "sites: partitions" in log.read_text(errors="replace"), 120, "the site stage to join")
        os.kill(pids[0], signal.SIGKILL)
        assert w.proc is not None
        assert w.proc.wait(timeout=60) == 1, w.log_tail()
        assert "the site stage process exited with code -9" in log.read_text(errors="replace"), w.log_tail()
    finally:
        w.stop()
