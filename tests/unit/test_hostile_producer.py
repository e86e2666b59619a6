"""A hostile producer mixed into a normal simulated stream, through the real serde, the core pipeline, the site
stage and the tickets path (differential).

Hostile records (hypothesis: arbitrary values in every field of every input schema, the extremes of each Avro
type, garbage bytes) are inserted at arbitrary places of a simulated world's stream. A record that is processed
belongs to a tenant of its own (99, with one site in the reference data of both runs), so the only thing it
shares with the world's records is what a producer cannot avoid sharing: the partitions, their watermarks and
clocks, the site stage's clocks. The property: no exception escapes; each hostile record is dead-lettered with a
known reason or processed; and every output that is not about tenant 99 and is not a hostile record's dead
letter is *identical*, in content and order, to a run without the hostile records.

A hostile record is stamped (Kafka timestamp) no later than its topic partition's watermark at that point of the
clean stream: what the broker allows a producer whose clock runs ahead (up to message.timestamp.after.max.ms) is
the documented limit of the bound (README "Input contract"), not something a record's fields can do. The
forged-clock records (event times a year ahead, stamped minutes ahead) are tested on their own, for real people.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.scoring import ModelCache
from schemas import contract, serde
from schemas.topics import person_key
from simulator.config import HOUR_MS, MINUTE_MS, SimConfig
from simulator.generate import generate
from streams.core.pipeline import INPUT_STEMS, DictStore, Incoming, Pipeline, References
from streams.core.sites import SiteStage
from streams.core.types import Out
from streams.core.validate import REASONS
from streams.replay import Lane, _ticket_outs
from streams.replay_config import ReplayConfig
from streams.replay_merge import Item

CFG = SimConfig(seed=7, tenants=1, sites_per_tenant=6, guards_per_site=3, span=30 * HOUR_MS,
                scenario_rates={"GHOST_SHIFT": 0.2, "MISSED_TOUR": 0.2, "GPS_SPOOFING": 0.2})
PARTITIONS = 6
SPACING = 100  # clean records sit at offsets 100, 200, 300... of their lane; hostile ones in between
BATCH = 250  # clean records per batch; a hostile record joins the batch of its insertion point
HX_TENANT, HX_SITE = 99, "hx-site"
DAY_MS = 24 * HOUR_MS
YEAR_MS = 365 * DAY_MS
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
STEM_OF = {**INPUT_STEMS, "tickets": "ticket"}
SCHEMAS = Path(contract.__file__).parent

Consumed = Incoming | Item


@dataclass(frozen=True, slots=True)
class World:
    refs: list[tuple[str, bytes]]
    stream: list[Consumed]  # clean, in arrival order
    lane_wm: dict[tuple[str, int], list[tuple[int, int]]]  # lane -> [(stream index, watermark after it)]
    tenants: frozenset[int]
    silent: frozenset[int]  # person partitions without activity


@lru_cache(maxsize=1)
def _world() -> World:
    refs: list[tuple[str, bytes]] = []
    lanes: Counter[tuple[str, int]] = Counter()
    stream: list[Consumed] = []
    lane_wm: dict[tuple[str, int], list[tuple[int, int]]] = {}
    tenants: set[int] = set()
    for r in generate(CFG):
        value = serde.encode(r.stem, r.record)
        if r.topic.startswith("ref."):
            refs.append((r.topic, value))
            tenants.add(int(r.record["tenant_id"]))
        elif r.topic in STEM_OF:
            p = zlib.crc32(r.key) % PARTITIONS
            lanes[(r.topic, p)] += 1
            off = lanes[(r.topic, p)] * SPACING
            if r.topic == "tickets":
                stream.append(Item(r.topic, p, off, r.at, r.key, value))
                continue
            marks = lane_wm.setdefault((r.topic, p), [])
            mark = min(int(r.record["occurred_at"]), r.at)
            marks.append((len(stream), max(mark, marks[-1][1]) if marks else mark))
            stream.append(Incoming(r.topic, p, off, r.key, value, r.at))
    hx_site = {"tenant_id": HX_TENANT, "site_id": HX_SITE, "name": "hostile", "timezone": "UTC", "lat": 0.0,
               "lon": 0.0, "geofence_radius_m": 100.0, "tours": [], "active": True, "updated_at": CFG.start}
    refs.append(("ref.sites", serde.encode("site", hx_site)))
    silent = frozenset(range(PARTITIONS)) - {r.partition for r in stream if r.topic == "activity"}
    return World(refs, stream, lane_wm, frozenset(tenants), silent)


def _run(inserted: Sequence[tuple[int, Consumed]] = ()) -> tuple[list[Out], Counter[str]]:
    """Pipeline + site stage + tickets over the clean stream with ``inserted`` records (before stream index i)."""
    w = _world()
    refs = References()
    pipe = Pipeline(refs, ModelCache())
    for short, value in w.refs:
        pipe.apply_reference(short, value)
    refs.mark_loaded()
    lane = Lane("hostile", ReplayConfig(), pipe, sites=SiteStage(lambda t, s: "UTC"))
    schemas = serde.SchemaStore()
    store = DictStore()
    before: dict[int, list[Consumed]] = {}
    for i, rec in inserted:
        before.setdefault(i, []).append(rec)
    outs: list[Out] = []
    late: Counter[str] = Counter()
    for start in range(0, len(w.stream) + 1, BATCH):
        batch: list[Consumed] = []
        for i in range(start, min(start + BATCH, len(w.stream) + 1)):
            batch += before.get(i, [])
            if i < len(w.stream):
                batch.append(w.stream[i])
        res = pipe.process(store, [r for r in batch if isinstance(r, Incoming)], "t")
        res.commit()
        assert lane.sites is not None
        sres = lane.sites.run_person_outputs(lane.site_store, res.outs, res.clocks, empty=w.silent)
        sres.commit(lane.site_store)
        outs += res.outs + sres.outs
        outs += _ticket_outs([r for r in batch if isinstance(r, Item)], "t", schemas, lane)
        late.update(res.dead_letters)
    return outs, late


@lru_cache(maxsize=1)
def _clean() -> tuple[list[Out], Counter[str]]:
    return _run()


def _hostile(o: Out) -> bool:
    if o.topic == "dead-letters":
        return int(o.record["offset"]) % SPACING != 0
    return o.record.get("tenant_id") == HX_TENANT


def _others(outs: list[Out]) -> list[tuple[str, bytes, str, dict[str, Any]]]:
    return [(o.topic, o.key, o.stem, o.record) for o in outs if not _hostile(o)]


def _dead_letters(outs: list[Out]) -> dict[tuple[str, int, int], dict[str, Any]]:
    return {(o.record["source_topic"], o.record["partition"], o.record["offset"]): o.record
            for o in outs if o.topic == "dead-letters"}


# -- hostile values ---------------------------------------------------------------------------------------

HUGE = "x" * 200_000
NASTY = ["", " ", "x" * (contract.MAX_ID_LEN + 1), HUGE, "a\x00b", "a:b", "a|b", "site:site-1-001", "\x1b[2J",
         "é", "🙂" * 300, "\u2028", "hx-site", "guard-1-0001", "1b2c3d4e-aaaa-4bbb-cccc-0123456789ab"]
ID_TEXT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=12)
EXTREME_LONGS = [LONG_MIN, LONG_MAX, 0, -1, 1, 2**31 - 1, 2**53, contract.MIN_TIME_MS - 1, contract.MIN_TIME_MS,
                 contract.MAX_TIME_MS - 1, contract.MAX_TIME_MS]
EXTREME_DOUBLES = [math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324, 1.7976931348623157e308, 90.0, -90.0, 180.0,
                   -180.0, 100_000.0, 1.0, 90.000001]


def _string() -> st.SearchStrategy[str]:
    return st.one_of(st.text(max_size=30), st.sampled_from(NASTY), ID_TEXT)


def _typed(typ: Any) -> st.SearchStrategy[Any]:
    if isinstance(typ, list):  # a union with null
        return st.one_of(st.none(), *(_typed(t) for t in typ if t != "null"))
    if isinstance(typ, dict):
        if typ["type"] == "enum":
            return st.sampled_from(typ["symbols"])
        if typ["type"] == "array":
            return st.one_of(st.lists(_typed(typ["items"]), max_size=4), st.just(["x"] * 25))
        return _typed(typ["type"])
    return {"long": st.one_of(st.integers(LONG_MIN, LONG_MAX), st.sampled_from(EXTREME_LONGS)),
            "int": st.integers(-(2**31), 2**31 - 1),
            "double": st.one_of(st.floats(), st.sampled_from(EXTREME_DOUBLES)),
            "boolean": st.booleans(), "string": _string()}[typ]


def _avro_fields(stem: str) -> list[dict[str, Any]]:
    return list(json.loads((SCHEMAS / f"{stem}.avsc").read_text())["fields"])


@st.composite
def _hostile_record(draw: st.DrawFn) -> tuple[int, Consumed, dict[str, Any] | None]:
    """(stream index to insert before, the consumed record, the record encoded or None for raw bytes)."""
    w = _world()
    short = draw(st.sampled_from(sorted(STEM_OF)))
    stem = STEM_OF[short]
    index = draw(st.integers(0, len(w.stream)))
    p = draw(st.integers(0, PARTITIONS - 1))
    marks = w.lane_wm.get((short, p), [])
    k = bisect.bisect_left(marks, (index, LONG_MIN))  # lane records before the insertion point
    wm = marks[k - 1][1] if k else CFG.start - DAY_MS
    ts = wm - draw(st.integers(0, DAY_MS))  # stamped no later than the lane's watermark (see the module doc)
    rec: dict[str, Any] | None = None
    if draw(st.integers(0, 9)) == 0:
        value = draw(st.one_of(st.binary(max_size=64), st.just(serde.encode("site", {
            "tenant_id": 1, "site_id": "s", "name": "n", "timezone": "UTC", "lat": 0.0, "lon": 0.0,
            "geofence_radius_m": 1.0, "tours": [], "active": True, "updated_at": 0}))))
    else:
        rec = {}
        for f in _avro_fields(stem):
            name, typ = f["name"], f["type"]
            if name == "tenant_id":
                rec[name] = draw(st.one_of(st.just(HX_TENANT), st.integers(LONG_MIN, LONG_MAX).filter(
                    lambda t: t not in w.tenants)))
            elif name in ("occurred_at", "received_at"):
                rec[name] = draw(st.one_of(st.sampled_from(EXTREME_LONGS), st.integers(LONG_MIN, LONG_MAX),
                                           st.integers(-3 * DAY_MS, 30 * MINUTE_MS).map(lambda d: ts + d)))
            elif name == "site_id":
                rec[name] = draw(st.one_of(st.just(HX_SITE), _typed(typ)))
            else:
                rec[name] = draw(_typed(typ))
        value = serde.encode(stem, rec)
    key = person_key(int(rec["tenant_id"]), rec.get("person_id"), rec.get("site_id")) if rec else b"hostile"
    off = k * SPACING + SPACING // 2  # between the lane's k-th and (k+1)-th clean records
    if short == "tickets":
        return index, Item(short, p, off, ts, key, value), rec
    return index, Incoming(short, p, off, key, value, ts), rec


def _distinct_offsets(records: list[tuple[int, Consumed, dict[str, Any] | None]]) -> list[tuple[int, Consumed]]:
    """Hostile records in the same gap of a lane get increasing offsets in insertion order (both < SPACING/2)."""
    out: list[tuple[int, Consumed]] = []
    seen: Counter[tuple[str, int, int]] = Counter()
    for index, r, _ in sorted(records, key=lambda x: x[0]):
        n = seen[(r.topic, r.partition, r.offset)]
        seen[(r.topic, r.partition, r.offset)] += 1
        out.append((index, dataclasses.replace(r, offset=r.offset + n)))
    return out


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(_hostile_record(), min_size=1, max_size=8))
def test_hostile_records_change_no_other_output(hostile: list[tuple[int, Consumed, dict[str, Any] | None]]) -> None:
    inserted = _distinct_offsets(hostile)
    outs, _ = _run(inserted)
    clean, _ = _clean()
    assert _others(outs) == _others(clean)
    letters = _dead_letters(outs)
    for (_, r), (_, _, rec) in zip(inserted, sorted(hostile, key=lambda x: x[0]), strict=True):
        letter = letters.get((f"t.{r.topic}", r.partition, r.offset))
        stem = STEM_OF[r.topic]
        if rec is None:
            assert letter is not None and letter["reason"] in REASONS
            continue
        bad = contract.check(stem, rec, None)
        if bad is not None:  # out of contract: dead-lettered with the contract's reason, the field named
            assert letter is not None and (letter["reason"], letter["value"]) == (bad.reason, r.value)
            assert bad.field.split("[")[0] in letter["detail"]
        elif letter is not None:
            assert letter["reason"] in REASONS and letter["value"] == r.value
        else:  # processed: it was inside the contract, of the hostile tenant and site
            assert rec["tenant_id"] == HX_TENANT and rec.get("site_id") in (HX_SITE, None)
            assert contract.check(stem, rec, r.timestamp) is None


def _forged(short: str, n: int, ahead_ms: int = YEAR_MS, stamp_ahead_ms: int = 5 * MINUTE_MS) -> tuple[int, Consumed]:
    """A real guard's record of ``short``, its event times ``ahead_ms`` ahead, stamped ``stamp_ahead_ms`` after
    the clean record it is inserted after (the n-th of its topic from the first third of the stream on)."""
    w = _world()
    same = [i for i in range(len(w.stream)) if w.stream[i].topic == short]
    i = same[len(same) // 3 + n]
    src = w.stream[i]
    rec = serde.decode(src.value)
    rec = {**rec, "event_id": f"forged-{short}-{n}", "occurred_at": rec["occurred_at"] + ahead_ms,
           "received_at": rec["received_at"] + ahead_ms}
    value = serde.encode(STEM_OF[short], rec)
    return i + 1, Incoming(short, src.partition, src.offset + 1, src.key, value, src.timestamp + stamp_ahead_ms)


def test_a_forged_clock_year_ahead_poisons_nothing() -> None:
    """The reported failure: a device clock a year ahead stamping both times, the record itself stamped (by the
    producer, within what the broker allows) minutes ahead. Dead-lettered as FUTURE_EVENT; afterwards nothing
    else of that partition is LATE, and every other output is the clean run's."""
    forged = [_forged("attendance", 0), _forged("attendance", 5), _forged("activity", 3), _forged("alerts", 0),
              _forged("audit-findings", 0)]
    outs, counts = _run(forged)
    clean, clean_counts = _clean()
    assert _others(outs) == _others(clean)
    assert counts["LATE"] == clean_counts["LATE"]
    assert counts - clean_counts == Counter({"FUTURE_EVENT": len(forged)})
    letters = _dead_letters(outs)
    for _, r in forged:
        letter = letters[(f"t.{r.topic}", r.partition, r.offset)]
        assert letter["reason"] == "FUTURE_EVENT" and "occurred_at" in letter["detail"]


def test_an_event_inside_the_skew_moves_no_watermark_past_its_record_timestamp() -> None:
    """Ahead of its record timestamp by less than the skew: processed, but the partition's watermark moves only to
    the record timestamp, so nothing else becomes LATE (the clock is never further ahead than the broker time)."""
    w = _world()
    ahead = contract.MAX_FUTURE_SKEW_MS - 1
    i, r = _forged("activity", 1, ahead_ms=ahead, stamp_ahead_ms=0)
    assert isinstance(r, Incoming)
    rec = serde.decode(r.value)
    # the hostile tenant's person, so its own outputs are set apart; a stamp behind the lane's watermark
    rec = {**rec, "tenant_id": HX_TENANT, "site_id": HX_SITE, "person_id": "hx-early"}
    marks = w.lane_wm[("activity", r.partition)]
    wm = marks[bisect.bisect_left(marks, (i, LONG_MIN)) - 1][1]
    r = Incoming("activity", r.partition, r.offset, person_key(HX_TENANT, "hx-early"),
                 serde.encode("activity_signal", {**rec, "occurred_at": wm + ahead, "received_at": wm + ahead}), wm)
    outs, counts = _run([(i, r)])
    clean, clean_counts = _clean()
    assert counts == clean_counts  # processed (no dead letter), and nothing else LATE
    assert _others(outs) == _others(clean)
    assert any(o.record.get("person_id") == "hx-early" for o in outs if o.topic == "signal-windows")


def _extreme(stem: str, n: int, ts: int) -> dict[str, Any]:
    """A record of the hostile tenant with every field at an edge of its domain, still inside the contract."""
    longest = "A.b_c-d@e+f~g=h" + "z" * (contract.MAX_ID_LEN - 15)
    code = "Z" * contract.MAX_CODE_LEN
    rec: dict[str, Any] = {"event_id": f"{longest[:100]}-{stem}-{n}", "tenant_id": HX_TENANT, "site_id": HX_SITE,
                           "person_id": longest, "occurred_at": ts, "received_at": ts + contract.MAX_FUTURE_SKEW_MS}
    if stem == "attendance_event":
        rec.update(event_type="CHECK_IN" if n % 2 == 0 else "CHECK_OUT", shift_id=longest, lat=90.0 if n else -90.0,
                   lon=-180.0 if n else 180.0, accuracy_m=100_000.0 if n else 0.0, device_id=longest,
                   is_mock_location=True, face_match_score=1.0 if n else 0.0)
    elif stem == "activity_signal":
        rec.update(kind="LOCATION_UPDATE", device_id=None, shift_id=None, lat=-90.0, lon=180.0, accuracy_m=-0.0,
                   is_mock_location=False, phone_event_type=code, task_id=None, tour_id=longest, checkpoint_id=None)
    elif stem == "noc_alert":
        rec.update(person_id=None, alert_type=code, severity="CRITICAL", message="\t\n\r é漢🙂" + "m" * 1990,
                   source=code)
    else:
        rec.update(finding_type=code, severity="CRITICAL", evidence_summary="s" * 4000, auditor_id=longest,
                   evidence_urls=["u" * 2048] * 20)
    assert contract.check(stem, rec, ts) is None
    return rec


def test_records_at_every_edge_of_the_contract_are_processed_and_change_nothing_else() -> None:
    w = _world()
    inserted: list[tuple[int, Consumed]] = []
    for n, short in enumerate(["attendance", "attendance", "activity", "alerts", "audit-findings"]):
        i = len(w.stream) // 4 + 40 * n
        busy = sorted(set(range(PARTITIONS)) - w.silent)  # a partition without activity has no clock
        p = busy[n % len(busy)]
        marks = w.lane_wm.get((short, p), [])
        k = bisect.bisect_left(marks, (i, LONG_MIN))
        ts = marks[k - 1][1] if k else CFG.start - DAY_MS
        rec = _extreme(STEM_OF[short], n, ts)
        key = person_key(HX_TENANT, rec.get("person_id"), HX_SITE)
        inserted.append((i, Incoming(short, p, k * SPACING + SPACING // 2, key, serde.encode(STEM_OF[short], rec),
                                     ts)))
    outs, counts = _run(inserted)
    clean, clean_counts = _clean()
    assert counts == clean_counts  # none of them dead-lettered
    assert _others(outs) == _others(clean)
    mine = Counter(o.topic for o in outs if o.record.get("tenant_id") == HX_TENANT)
    assert mine["fraud-scores"] == 2 and mine["events"] >= 4  # both punches scored, alert and finding announced
