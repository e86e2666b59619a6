"""The ``noc train`` / ``noc model`` command line (parsing only; the commands run in integration tests)."""

from __future__ import annotations

import argparse
import io

import pytest

from infra.cli import build_parser
from models.cli import _until, parse_duration
from models.progress import Progress


def test_durations() -> None:
    assert parse_duration("7d") == 7 * 86400 and parse_duration("90s") == 90 and parse_duration("1.5h") == 5400
    assert parse_duration("1w") == parse_duration("7d")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration("weekly")


def test_until_accepts_epoch_ms_and_iso() -> None:
    assert _until("1700000000000") == 1_700_000_000_000
    assert _until("2026-03-01") == _until("2026-03-01T03:00:00+03:00") == 1_772_323_200_000


def test_parser_has_the_documented_commands() -> None:
    p = build_parser()
    a = p.parse_args(["train", "--tenant", "1", "--days", "180", "--test-size", "0.2", "--algo", "lightgbm",
                      "--auto-activate"])
    assert (a.tenant, a.days, a.test_size, a.algo, a.auto_activate, a.from_sim) == (1, 180, 0.2, "lightgbm", True, None)
    assert p.parse_args(["train"]).algo == "auto" and p.parse_args(["train"]).tenant is None
    assert p.parse_args(["model", "activate", "v1"]).version == "v1"
    assert p.parse_args(["model", "rollback", "--tenant", "3"]).tenant == 3
    loop = p.parse_args(["model", "retrain-loop", "--every", "7d", "--tenant", "2"])
    assert loop.every == 604800 and loop.auto_activate and loop.tenant == 2
    assert p.parse_args(["model", "list"]).func.__name__ == "_list"


def test_progress_prints_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    prog = Progress(out)
    prog("featurizing", 10, 100)
    prog("featurizing", 100, 100)
    prog("training", 5)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("featurizing: 10/100 (10%)") and lines[1].startswith("featurizing: 100/100 (100%)")
    assert lines[2].startswith("training: 5")
