"""Prometheus metrics of the gateway (default registry, served at ``/metrics``).

The ML and fraud counters are fed from the live feed this process consumes (``fraud_scored`` and
``ticket_updated`` events), so a dashboard sees them without scraping the stream workers.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LAT = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

API_REQUESTS = Counter("noc_api_requests_total", "REST requests", ["method", "route", "status"])
API_LATENCY = Histogram("noc_api_latency_seconds", "REST request latency", ["route"], buckets=_LAT)
ML_PREDICTIONS = Counter("noc_ml_predictions_total", "Fraud model predictions seen on the feed",
                         ["model_version", "risk_level"])
ML_PREDICTION_LATENCY = Histogram("noc_ml_prediction_latency_seconds",
                                  "Event time to fraud score publication, per prediction", buckets=_LAT)
WS_BROADCASTS = Counter("noc_websocket_broadcasts_total", "Events sent to WebSocket clients", ["type"])
WS_BROADCAST_LATENCY = Histogram("noc_websocket_broadcast_latency_seconds",
                                 "Kafka produce timestamp to WebSocket send", ["type"], buckets=_LAT)
WS_FRAMES = Counter("noc_websocket_frames_total", "Event frames sent: 'shared' (one encoding written to every "
                    "caught-up client of a group) or 'queue' (a client's own backlog)", ["path"])
WS_CLIENTS = Gauge("noc_websocket_clients", "Connected WebSocket clients")
WS_CLOSED = Counter("noc_websocket_closed_total", "WebSocket closes by the gateway, by code", ["code"])
FRAUD_DETECTIONS = Counter("noc_fraud_detections_total", "fraud_scored events at high or critical risk",
                           ["risk_level"])
FRAUD_TICKETS = Counter("noc_fraud_tickets_created_total", "Tickets opened from fraud scores (ticket_updated feed)")
FEED_EVENTS = Counter("noc_feed_events_total", "Events consumed from the consolidated feed", ["type"])
FEED_DEAD_LETTER_ERRORS = Counter("noc_feed_dead_letter_errors_total",
                                  "Undecodable feed records the gateway could not dead-letter (counted, dropped)")
FEED_UNKNOWN_TENANT = Counter("noc_feed_unknown_tenant_total", "Feed events of tenants without a token, dropped")
WS_LIMITED = Counter("noc_websocket_refused_total", "WebSocket connections refused or closed by a limit",
                     ["limit"])
API_LIMITED = Counter("noc_api_rate_limited_total", "REST requests answered 429", ["limit"])
FEED_DECODE_ERRORS = Counter("noc_feed_decode_errors_total", "Feed records dead-lettered by the gateway", ["reason"])
GATEWAY_CONSUMER_LAG = Gauge("noc_gateway_consumer_lag", "Lag of this gateway's feed consumer",
                             ["topic", "partition"])
CONSUMER_GROUP_LAG = Gauge("noc_consumer_lag", "Committed-offset lag per consumer group and topic",
                           ["group", "topic"])
