"""Which records an export keeps: a stream with redelivered duplicates keeps exactly what the clean stream keeps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.topics import BY_SHORT
from streams.export_dedup import IDENTITY, Identity, Picker, identity_of

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def _kept(ident: Identity, stream: list[dict[str, Any] | None]) -> list[dict[str, Any]]:
    p = Picker(ident)
    for r in stream:
        p.note(r)
    keep = p.keep()
    assert len(keep) == len(stream)
    out = []
    for i, r in enumerate(stream):
        if keep[i]:
            assert r is not None and p.check(i, r)
            out.append(r)
    return out


# A clean stream: incidents with revisions in increasing order, each (id, revision) once.
_incident = st.tuples(st.integers(1, 2), st.sampled_from("abcdef"), st.integers(0, 4))


@st.composite
def _clean_and_hostile(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any] | None]]:
    keys = sorted(set(draw(st.lists(_incident, min_size=1, max_size=30))), key=lambda k: k[2])
    clean = [{"tenant_id": t, "incident_id": i, "revision": r, "title": f"{t}{i}{r}"} for t, i, r in keys]
    # What a crash does: a run of already produced records is produced again, later in the stream; and
    # undecodable records (None) anywhere.
    hostile: list[dict[str, Any] | None] = list(clean)
    for _ in range(draw(st.integers(0, 3))):
        a = draw(st.integers(0, len(clean) - 1))
        b = draw(st.integers(a, len(clean)))
        at = draw(st.integers(b, len(hostile)))
        hostile[at:at] = [dict(r) for r in clean[a:b]]
    for _ in range(draw(st.integers(0, 2))):
        hostile.insert(draw(st.integers(0, len(hostile))), None)
    return clean, hostile


@settings(max_examples=200, deadline=None)
@given(_clean_and_hostile())
def test_redelivered_records_leave_exactly_the_clean_streams_selection(
        streams: tuple[list[dict[str, Any]], list[dict[str, Any] | None]]) -> None:
    clean, hostile = streams
    for mode in ("latest", "all"):
        ident = identity_of("incidents", mode)
        want = _kept(ident, list(clean))
        got = _kept(ident, hostile)
        assert sorted(map(repr, got)) == sorted(map(repr, want))
    latest = {(r["tenant_id"], r["incident_id"]): r for r in clean}  # clean is in revision order
    assert sorted(map(repr, _kept(identity_of("incidents"), hostile))) == sorted(map(repr, latest.values()))
    every = _kept(identity_of("incidents", "all"), hostile)
    assert sorted(map(repr, every)) == sorted(map(repr, clean))


def test_latest_revision_wins_wherever_it_sits_and_tenants_are_apart() -> None:
    recs: list[dict[str, Any] | None] = [
        {"tenant_id": 1, "incident_id": "x", "revision": 3},
        {"tenant_id": 1, "incident_id": "x", "revision": 1},
        {"tenant_id": 2, "incident_id": "x", "revision": 1},
        None,
        {"tenant_id": 1, "incident_id": "x", "revision": 2},
    ]
    kept = _kept(identity_of("incidents"), recs)
    assert kept == [recs[0], recs[2]]
    assert _kept(identity_of("incidents", "all"), recs) == [recs[0], recs[1], recs[2], recs[4]]


def test_first_or_last_of_equal_records_as_the_sink_keeps_them() -> None:
    a = {"tenant_id": 1, "window_id": "w", "event_count": 1}
    b = {"tenant_id": 1, "window_id": "w", "event_count": 2}
    assert _kept(IDENTITY["signal-windows"], [a, b]) == [b]  # the sink updates: the later one
    s1 = {"tenant_id": 1, "score_id": "s", "fraud_probability": 0.1}
    s2 = {"tenant_id": 1, "score_id": "s", "fraud_probability": 0.2}
    assert _kept(IDENTITY["fraud-scores"], [s1, s2]) == [s1]  # the sink does nothing on conflict: the first


def test_pass_two_reading_something_else_is_caught() -> None:
    p = Picker(IDENTITY["fraud-scores"])
    p.note({"tenant_id": 1, "score_id": "s"})
    p.note(None)
    assert p.keep().tolist() == [True, False]
    assert p.check(0, {"tenant_id": 1, "score_id": "s"})
    assert not p.check(0, {"tenant_id": 1, "score_id": "t"})
    assert not p.check(1, {"tenant_id": 1, "score_id": "s"})
    assert not p.check(2, {"tenant_id": 1, "score_id": "s"})
    assert p.undecodable == 1 and len(p) == 2


def test_empty() -> None:
    assert Picker(IDENTITY["labels"]).keep().tolist() == []


def test_every_catalogued_topic_has_an_identity_its_schema_holds() -> None:
    assert set(IDENTITY) == set(BY_SHORT)
    for short, ident in IDENTITY.items():
        fields = {f["name"] for f in json.loads((SCHEMAS / f"{BY_SHORT[short].schema}.avsc").read_text())["fields"]}
        assert set(ident.fields) <= fields, short
        assert ident.revision is None or ident.revision in fields, short
