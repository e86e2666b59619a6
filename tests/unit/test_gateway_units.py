"""Gateway pieces that need no services: tokens, auth headers, origins, WS messages, cache, params, OpenAPI."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from starlette.datastructures import Headers
from starlette.requests import Request

from gateway import api, auth, tokens
from gateway.cache import TTLCache
from gateway.consumer import to_feed_event
from gateway.feed_metrics import observe_feed
from gateway.metrics import FRAUD_DETECTIONS, ML_PREDICTIONS
from gateway.openapi import openapi_document
from gateway.ws import ProtocolViolation, parse_client_message
from schemas import serde


def test_capabilities_expand_and_reject_unknown() -> None:
    assert tokens.expand(["noc:admin"]) == {"noc:admin", "noc:manage", "noc:view"}
    assert tokens.expand(["noc:view"]) == {"noc:view"}
    with pytest.raises(ValueError, match="unknown capability"):
        tokens.expand(["noc:root"])
    p = tokens.Principal("id", 1, tokens.expand(["noc:manage"]))
    assert p.can("noc:view") and not p.can("noc:admin")


def test_token_shape_and_hash() -> None:
    good = "noc_abcd1234_" + "A-_z" * 10
    assert tokens.well_formed(good)
    for bad in ("", "noc_short", "xyz_" + "a" * 40, "noc_" + "a" * 30 + " ", "noc_" + "é" * 30):
        assert not tokens.well_formed(bad)
    assert tokens.hash_token(good) == tokens.hash_token(good) and len(tokens.hash_token(good)) == 64


def test_bearer_sources() -> None:
    assert auth.bearer_from_headers(Headers({"authorization": "Bearer abc"})) == "abc"
    assert auth.bearer_from_headers(Headers({"authorization": "Basic abc"})) is None
    assert auth.bearer_from_headers(Headers({})) is None
    offered = auth.offered_subprotocols(Headers({"sec-websocket-protocol": "noc.v1, bearer.tok"}))
    assert offered == ["noc.v1", "bearer.tok"] and auth.bearer_from_subprotocols(offered) == "tok"
    assert auth.bearer_from_subprotocols(["noc.v1"]) is None


def test_origin_allow_list() -> None:
    allowed = ("https://noc.example",)
    assert auth.origin_allowed(None, "gw:8080", allowed, False)  # not a browser
    assert auth.origin_allowed("https://noc.example/", "gw:8080", allowed, False)
    assert auth.origin_allowed("http://gw:8080", "gw:8080", allowed, False)  # its own page
    assert not auth.origin_allowed("https://gw:8080", "gw:8080", allowed, False)
    assert not auth.origin_allowed("http://evil.example", "gw:8080", allowed, False)
    assert auth.origin_allowed("http://any", "gw", ("*",), False)


def test_subscribe_message_parsing() -> None:
    msg = parse_client_message('{"action":"subscribe","types":["fraud_scored"],"site_ids":["s1"],'
                               '"resume_from":"e1","cursor":"2:10"}', 4096)
    assert msg["types"] == {"fraud_scored"} and msg["site_ids"] == {"s1"} and msg["cursor"] == (2, 10)
    assert parse_client_message('{"action":"subscribe"}', 4096)["types"] is None
    assert parse_client_message('{"action":"ping"}', 4096)["action"] == "ping"
    cases = [("x" * 5000, 1009), ("[1]", 1007), ('{"action":"subscribe","types":"fraud_scored"}', 1007),
             ('{"action":"subscribe","site_ids":[1]}', 1007), ('{"action":"subscribe","resume_from":""}', 1007),
             ('{"action":"subscribe","types":' + orjson.dumps(["alert_created"] * 501).decode() + "}", 1007)]
    for text, code in cases:
        with pytest.raises(ProtocolViolation) as exc:
            parse_client_message(text, 4096 if code == 1009 else 100_000)
        assert exc.value.code == code and len(exc.value.reason.encode()) <= 123


def test_cache_expires_evicts_and_invalidates(monkeypatch: pytest.MonkeyPatch) -> None:
    c = TTLCache(60, 2)
    c.put((1, "/a", ""), b"1")
    c.put((2, "/a", ""), b"2")
    assert c.get((1, "/a", "")) == b"1"
    c.put((1, "/b", ""), b"3")  # evicts the least recently written
    assert c.get((1, "/a", "")) is None and c.get((2, "/a", "")) == b"2"
    c.invalidate_tenant(2)
    assert c.get((2, "/a", "")) is None and c.get((1, "/b", "")) == b"3"
    later = time.monotonic() + 61
    monkeypatch.setattr(time, "monotonic", lambda: later)
    assert c.get((1, "/b", "")) is None


def _req(query: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "query_string": query.encode(), "headers": []})


def test_query_parameter_validation() -> None:
    assert api.q_int(_req("n=5"), "n", 1, 1, 10) == 5 and api.q_int(_req(""), "n", 7, 1, 10) == 7
    for bad in ("n=0", "n=11", "n=x", "n=1e3", "n=" + "9" * 20):
        with pytest.raises(api.ApiError):
            api.q_int(_req(bad), "n", 1, 1, 10)
    assert api.q_enum(_req("s=open"), "s", ("OPEN",)) == "OPEN"
    with pytest.raises(api.ApiError):
        api.q_enum(_req("s=shut"), "s", ("OPEN",))
    t = api.q_time(_req("t=2026-01-02T03:04:05"), "t")
    assert t is not None and t.tzinfo is not None and api.q_time(_req("t=0"), "t") is not None
    for bad in ("t=soon", "t=" + "9" * 30):
        with pytest.raises(api.ApiError):
            api.q_time(_req(bad), "t")
    with pytest.raises(api.ApiError):
        api.check_id("a\x00b", "id")
    with pytest.raises(api.ApiError):
        api.check_id("x" * 201, "id")


def test_openapi_document_lists_every_route() -> None:
    doc: dict[str, Any] = openapi_document()
    assert doc["openapi"] == "3.0.3" and len(doc["paths"]) == 28
    # Every path is documented with and without its trailing slash (both answer, no redirect).
    assert {p.rstrip("/") for p in doc["paths"]} == {p for p in doc["paths"] if not p.endswith("/")}
    assert all(f"{p}/" in doc["paths"] for p in doc["paths"] if not p.endswith("/"))
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    orjson.dumps(doc)


class _Msg:
    def __init__(self, value: bytes, ts: int = 1_700_000_000_500) -> None:
        self._v, self._ts = value, ts

    def value(self) -> bytes:
        return self._v

    def timestamp(self) -> tuple[int, int]:
        return 1, self._ts

    def partition(self) -> int:
        return 2

    def offset(self) -> int:
        return 41


def test_feed_event_decoding_and_feed_metrics() -> None:
    rec = {"type": "fraud_scored", "event_id": "f1", "timestamp": 1_700_000_000_000, "tenant_id": 3, "site_id": "s",
           "person_id": None, "payload": orjson.dumps({"risk_level": "CRITICAL", "model_version": "m1",
                                                       "occurred_at": 1_700_000_000_000}).decode()}
    ev = to_feed_event(_Msg(serde.encode("noc_event", rec)))  # type: ignore[arg-type]
    assert (ev.tenant_id, ev.cursor, ev.produced_ms) == (3, "2:41", 1_700_000_000_500)
    obj = orjson.loads(ev.data)
    assert obj["payload"]["risk_level"] == "CRITICAL" and obj["cursor"] == "2:41"
    before = FRAUD_DETECTIONS.labels("CRITICAL")._value.get()
    preds = ML_PREDICTIONS.labels("m1", "CRITICAL")._value.get()
    observe_feed([ev])
    assert FRAUD_DETECTIONS.labels("CRITICAL")._value.get() == before + 1
    assert ML_PREDICTIONS.labels("m1", "CRITICAL")._value.get() == preds + 1
    raw = dict(rec, payload="not json")
    assert orjson.loads(to_feed_event(_Msg(serde.encode("noc_event", raw))).data)["payload"] == "not json"  # type: ignore[arg-type]
    with pytest.raises(serde.DecodeError):
        to_feed_event(_Msg(b"junk"))  # type: ignore[arg-type]


def test_grafana_dashboard_queries_only_metrics_the_gateway_exports() -> None:
    import re
    from pathlib import Path

    from prometheus_client import REGISTRY

    dash = orjson.loads((Path(__file__).resolve().parents[2] / "infra" / "grafana" / "nocstream-gateway.json")
                        .read_bytes())
    exported = {m.name for m in REGISTRY.collect()}
    used = {re.sub(r"_(bucket|total)$", "", name) for p in dash["panels"] for t in p["targets"]
            for name in re.findall(r"\bnoc_[a-z_]+", t["expr"])}
    assert used and used <= exported, used - exported
    for required in ("noc_api_requests", "noc_api_latency_seconds", "noc_websocket_broadcast_latency_seconds",
                     "noc_consumer_lag", "noc_fraud_tickets_created"):
        assert required in used


def test_documented_event_message_puts_the_event_fields_on_top_and_the_envelope_wins() -> None:
    from gateway.event_messages import event_message
    from gateway.hub import FeedEvent, per_event_frame, ws_text_frame

    env = {"type": "anomaly_detected", "event_id": "e1", "timestamp": 1_780_000_000_123, "tenant_id": 1,
           "site_id": "s-1", "person_id": None, "cursor": "0:7", "produced_at": 5,
           "payload": {"metric": "phone_events_count", "score": 0.9, "type": "spoofed", "tenant_id": 2,
                       "person_id": "p-9", "observed": 0.0}}
    msg = orjson.loads(event_message(orjson.dumps(env), "anomaly_detected"))
    assert msg["type"] == "anomaly_detected" and msg["tenant_id"] == 1  # a payload field cannot change them
    assert msg["timestamp"] == "2026-05-28T20:26:40.123Z" and msg["cursor"] == "0:7" and msg["event_id"] == "e1"
    assert msg["anomaly_type"] == "phone_events_count" and msg["fraud_score"] == 0.9 and msg["person_name"] is None
    assert msg["person_id"] == "p-9" and msg["observed"] == 0.0  # the envelope's null does not hide the payload's
    odd = orjson.loads(event_message(orjson.dumps({**env, "type": "x", "payload": "text", "timestamp": 10**18}), "x"))
    assert odd["payload"] == "text" and odd["timestamp"] == 10**18  # no calendar date: passed on as the number
    ev = FeedEvent(1, "e1", "anomaly_detected", "s-1", None, 0, 7, 5, orjson.dumps(env))
    assert per_event_frame(ev) is per_event_frame(ev)  # built once, cached on the event
    assert per_event_frame(ev) == ws_text_frame(event_message(ev.data, ev.type))
