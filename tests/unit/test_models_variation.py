"""Simulator variations for fraud-model training and shifted evaluation: determinism and what they draw."""

from __future__ import annotations

import hashlib
import random
from collections import Counter

import pytest

from simulator.config import DAY_MS, SimConfig
from simulator.encoding import encoders
from simulator.generate import Simulation, generate
from simulator.variation import NAMES, SHIFTED, VARIATIONS, draw, variation

SMALL = SimConfig(seed=3, tenants=1, sites_per_tenant=3, guards_per_site=5, span=DAY_MS, scenario_rate=0.3)


def _digest(cfg: SimConfig) -> str:
    enc = encoders()
    h = hashlib.sha256()
    for sr in generate(cfg):
        h.update(sr.topic.encode() + b"\0" + sr.key + b"\0" + enc[sr.stem](sr.record))
    return h.hexdigest()


def test_standard_world_keeps_its_bytes() -> None:
    # Digests of the standard world measured before the variations existed: same seed, same bytes.
    assert _digest(SMALL) == "80eb16c6f7d33ebd2da9f08cc3052355b83fdb884e2c60d80e751eb23598c841"
    assert _digest(SimConfig(seed=11, tenants=1, sites_per_tenant=4, guards_per_site=6, span=3 * DAY_MS,
                             scenario_rate=0.5)) == "850108be0e9fa89586c2a6475212b59afc671339fe542f8bf911b5eb07bd3afc"


@pytest.mark.parametrize("name", [n for n in NAMES if n != "standard"])
def test_each_variation_is_deterministic_and_differs_from_standard(name: str) -> None:
    cfg = SimConfig(seed=3, tenants=1, sites_per_tenant=3, guards_per_site=5, span=DAY_MS, scenario_rate=0.3,
                    variation=name)
    assert _digest(cfg) == _digest(cfg)
    assert _digest(cfg) != _digest(SMALL)


def test_variation_names_are_checked() -> None:
    assert variation("standard") is None and variation("randomised") is VARIATIONS["randomised"]
    with pytest.raises(ValueError, match="unknown variation"):
        variation("nope")
    with pytest.raises(ValueError, match="unknown variation"):
        Simulation(SimConfig(variation="nope"))


def test_draw_stays_inside_its_modes() -> None:
    rng = random.Random(1)
    modes = ((0.5, 0.0, 1.0), (0.5, 10.0, 11.0))
    xs = [draw(rng, modes) for _ in range(2000)]
    assert all(0.0 <= x <= 1.0 or 10.0 <= x <= 11.0 for x in xs)
    low = sum(x <= 1.0 for x in xs)
    assert 900 < low < 1100


def test_randomised_world_draws_every_scenario_and_the_new_look_alikes() -> None:
    sim = Simulation(SimConfig(seed=5, tenants=1, sites_per_tenant=6, guards_per_site=8, span=4 * DAY_MS,
                               scenario_rate=0.35, hard_negatives=2.0, variation="randomised"))
    records = list(sim)
    assert set(sim.stats.scenarios) == {"BUDDY_PUNCHING", "GPS_SPOOFING", "IMPOSSIBLE_TRAVEL", "OFF_GEOFENCE",
                                        "GHOST_SHIFT", "MISSED_TOUR", "LATE_ARRIVAL"}
    kinds = Counter(sim.lookalikes.values())
    for k in ("DRIFTING_GPS", "PRECISE_GPS", "FAST_COMMUTE", "TEAM_PHONE", "POOR_GPS", "NEAR_FENCE"):
        assert kinds[k] > 0, k
    # look-alikes are legit check-ins: their labels say not fraud
    labels = {r.record["event_id"]: r.record for r in records if r.topic == "labels"}
    assert all(not labels[e]["is_fraud"] for e in sim.lookalikes if e in labels)
    # team phones are shared: several people check in on one
    users: dict[str, set[str]] = {}
    for r in records:
        if r.topic == "attendance" and r.record["device_id"].startswith("team-"):
            users.setdefault(r.record["device_id"], set()).add(r.record["person_id"])
    assert users and max(len(u) for u in users.values()) >= 2


def test_shifted_variations_are_not_the_training_ranges() -> None:
    train = VARIATIONS["randomised"]
    for name in SHIFTED:
        assert VARIATIONS[name] != train
