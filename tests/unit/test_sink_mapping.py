from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from test_sink_records import SAMPLES, T0, baseline, incident

from schemas.serde import encode
from sinks import map_derived, map_feed, map_inputs
from sinks.migrate import discover
from sinks.routes import ROUTES, SUNK_TOPICS, TICKET_TOPICS, Raw, prepare, short_name
from sinks.tables import TableSpec
from sinks.tickets_store import change_from_command, change_from_upstream, feed_event


def _raw(short: str, value: bytes | None, offset: int = 0) -> Raw:
    return Raw(short, f"ns.{short}", 2, offset, b"k", value, T0)


def test_every_catalogued_sunk_topic_has_a_sample_and_maps() -> None:
    assert set(SAMPLES) == set(SUNK_TOPICS)
    prep = prepare([_raw(short, encode(stem, rec)) for short, (stem, rec) in SAMPLES.items()])
    assert prep.count == len(SAMPLES) and not prep.dead
    assert [s for s, _r, _raw in prep.tickets] == list(TICKET_TOPICS)
    for spec, rows in prep.rows.items():
        for row in rows:
            assert len(row) == len(spec.columns), spec.name


def test_times_become_aware_utc_datetimes() -> None:
    row = map_inputs.attendance_row(SAMPLES["attendance"][1])
    assert row[4] == datetime(2026, 11, 1, tzinfo=UTC)
    assert map_inputs.ts(None) is None


def test_escalation_fills_only_escalation_columns_on_conflict() -> None:
    spec = map_inputs.ESCALATIONS
    assert spec.update_columns() == ("escalated_to_ticket", "escalation_ticket_id", "escalated_at")
    row = map_inputs.escalation_row(SAMPLES["finding-escalations"][1])
    assert row[0] == "f-0" and row[-1] == row[4]  # occurred_at stands in with the finding's event time
    assert "finding_type" not in spec.upsert_sql()


def test_incident_rows_and_evidence_rows() -> None:
    inc = incident(revision=2, n_evidence=3)
    row = map_derived.incident_row(inc)
    assert orjson.loads(row[8])[2]["event_id"] == "al-2"
    ev = map_derived.incident_event_rows(inc)
    assert [e[1] for e in ev] == ["al-0", "al-1", "al-2"] and all(e[0] == "inc-0" for e in ev)


def test_fraud_score_nan_becomes_null_in_json_but_stays_in_the_vector() -> None:
    row = map_derived.fraud_score_row(SAMPLES["fraud-scores"][1])
    assert orjson.loads(row[12])[0]["value"] is None
    assert math.isnan(row[14][0]) and row[14][1] == 3.0


def test_undecodable_and_wrong_schema_records_become_dead_letters_and_the_rest_flows() -> None:
    good = encode("activity_signal", SAMPLES["activity"][1])
    prep = prepare([_raw("activity", b"garbage", 1), _raw("activity", good, 2),
                    _raw("activity", encode("noc_alert", SAMPLES["alerts"][1]), 3), _raw("activity", None, 4)])
    assert len(prep.rows[map_inputs.ACTIVITY]) == 1
    assert [(d["offset"], d["reason"]) for d in prep.dead] == [(1, "MALFORMED"), (3, "WRONG_SCHEMA"), (4, "MALFORMED")]
    d = prep.dead[0]
    assert d["value"] == b"garbage" and d["key"] == b"k" and d["source_topic"] == "ns.activity"
    assert d["dead_letter_id"].startswith("dlq-") and d["component"] == "sink"


def test_feed_event_with_bad_payload_is_dead_lettered() -> None:
    bad = dict(SAMPLES["events"][1], payload="{not json")
    prep = prepare([_raw("events", encode("noc_event", bad))])
    assert prep.dead[0]["reason"] == "UNMAPPABLE" and "payload is not JSON" in prep.dead[0]["detail"]
    with pytest.raises(map_feed.BadPayload):
        map_feed.event_log_row(bad)


def test_dedup_keeps_latest_or_highest_rank() -> None:
    rows = [map_derived.incident_row(incident(revision=r)) for r in (2, 3, 1)]
    kept = map_derived.INCIDENTS.dedup(rows)
    assert len(kept) == 1 and kept[0][12] == 3
    b = [map_derived.baseline_row(baseline(updated_at=t)) for t in (T0 + 5, T0 + 1)]
    assert map_derived.BASELINES.dedup(b)[0][15] == map_inputs.ts(T0 + 5)
    acts = [map_inputs.activity_row(SAMPLES["activity"][1])] * 3
    assert len(map_inputs.ACTIVITY.dedup(acts)) == 1


def test_upsert_sql_per_policy() -> None:
    assert map_inputs.ACTIVITY.upsert_sql().endswith("ON CONFLICT (event_id, tenant_id, occurred_at) DO NOTHING")
    inc = map_derived.INCIDENTS.upsert_sql()
    assert "DO UPDATE SET" in inc and inc.endswith("WHERE EXCLUDED.revision > t.revision")
    assert map_derived.BASELINES.upsert_sql().endswith("WHERE EXCLUDED.updated_at >= t.updated_at")
    assert '"partition", "offset"' in map_feed.DEAD_LETTERS.copy_sql()
    assert map_inputs.ACTIVITY.temp_sql() == ("CREATE TEMP TABLE tmp_activity (LIKE activity INCLUDING DEFAULTS) "
                                              "ON COMMIT DROP")


def test_partition_times() -> None:
    rows = [map_inputs.activity_row(SAMPLES["activity"][1])]
    assert map_inputs.ACTIVITY.partition_times(rows) == [datetime(2026, 11, 1, tzinfo=UTC)]
    assert map_inputs.ALERTS.partition_times(rows) == []


def test_routes_cover_distinct_specs() -> None:
    names = [r.spec.name for r in ROUTES.values()]
    assert len(names) == len(set(names))
    assert isinstance(ROUTES["incidents"].many_spec, TableSpec)
    assert short_name("ns.activity", "ns") == "activity" and short_name("other", "ns") == "other"


def test_ticket_changes_from_records() -> None:
    ch = change_from_command(SAMPLES["ticket-commands"][1])
    assert (ch.change_id, ch.status, ch.origin, ch.create["command_id"]) == ("audit:f-0", "NEW", "COMMAND", "audit:f-0")
    up = change_from_upstream(SAMPLES["tickets"][1])
    assert (up.change_id, up.ticket_id, up.origin) == ("e-1", "tk-1", "UPSTREAM")


def test_feed_event_id_is_stable_and_payload_sorted() -> None:
    at = datetime(2026, 11, 1, tzinfo=UTC)
    ticket = {"ticket_id": "tk", "tenant_id": 1, "site_id": "s1", "person_id": None, "created_at": at,
              "ingested_at": at, "status": "NEW", "resolution": None}
    hist = {"change_id": "c1", "to_status": "OPEN", "resolution": None, "version": 2, "occurred_at": at,
            "from_status": "NEW", "origin": "API", "actor": "u", "note": None}
    a, b = feed_event(ticket, hist), feed_event(dict(ticket, ingested_at=datetime.now(UTC)), hist)
    assert a == b and a["type"] == "ticket_updated" and a["timestamp"] == T0
    payload = orjson.loads(a["payload"])
    assert payload["status"] == "OPEN" and payload["version"] == 2 and "ingested_at" not in payload


def test_migrations_are_numbered_and_include_the_models_registry(tmp_path: Path) -> None:
    names = [m.path.name for m in discover()]
    assert names == sorted(names) and "060_models.sql" in names and names[0] == "010_inputs.sql"
    (tmp_path / "001_a.sql").write_text("SELECT 1;")
    (tmp_path / "001_b.sql").write_text("SELECT 1;")
    with pytest.raises(ValueError, match="two migrations numbered 001"):
        discover(tmp_path)
    (tmp_path / "001_b.sql").unlink()
    (tmp_path / "bad name.sql").write_text("")
    with pytest.raises(ValueError, match="not named"):
        discover(tmp_path)
