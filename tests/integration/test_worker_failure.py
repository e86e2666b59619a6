"""A consuming thread that fails stops the whole worker with exit code 1 (a supervisor restarts it and Kafka
redelivers from the last commit) instead of leaving a process that looks alive and does nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from simulator.config import HOUR_MS, SimConfig
from simulator.produce import simulate

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
    assert "boom: injected pipeline failure" in out and "input loop failed" in out, out[-3000:]
