"""Gateway benchmark on loopback: REST latency at a fixed request rate, WebSocket fan-out latency, memory.

    python tests/bench/bench_gateway.py [--rate 500] [--seconds 10] [--clients 1000] [--events 1000]
                                        [--ws-seconds 10] [--client-procs 2] [--workers 1]
                                        [--loop auto|asyncio|uvloop] [--http auto|h11|httptools]

The gateway runs as its own process (``noc gateway``) on a fresh Postgres schema and topic namespace.
REST: an open-loop load generator sends requests on a fixed schedule; latency is measured from the scheduled
send time, so a stall is not hidden (no coordinated omission). Baseline in the same run: ``/health`` (HTTP
stack only). Figures: telemetry person/site cached (60 s cache), uncached (a distinct query each time, so
every request reaches Postgres), fraud heatmap uncached.
WebSocket: N clients in separate processes subscribe; a producer sends noc_events at a fixed rate; each client
records produce timestamp (Kafka CreateTime) -> receipt (every N/50-th client parses JSON and times events, the
others count them). Baselines in the same run: a plain Kafka consumer configured as the gateway's (the Kafka leg
alone), and one WebSocket client, same rate. "gw CPU" is the gateway's process tree, "clients CPU" the receiving
processes' (from connected to done), "shared" the share of event frames sent on the shared-frame path.
Memory per connection: the gateway's RSS with N idle clients minus RSS before, divided by N.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import multiprocessing as mp
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx
import orjson
import psycopg

from gateway.testing import FeedProducer, free_port, noc_event, seed_rows
from gateway.tokens import create_token
from infra.config import settings
from infra.topics_admin import apply_topics, delete_namespace


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def tree(pid: int) -> list[int]:
    """The process and its children (``--workers`` runs the gateways as children of a supervisor)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(k) for k in f.read().split()]
    except FileNotFoundError:
        return []
    return [pid, *(p for k in kids for p in tree(k))]


def cpu_s(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        with open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def send_buckets(http_url: str) -> dict[float, float]:
    """The gateway's own produce -> send histogram (all types), cumulative counts by upper bound."""
    out: dict[float, float] = {}
    for line in httpx.get(http_url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("noc_websocket_broadcast_latency_seconds_bucket{"):
            le = line.split('le="')[1].split('"')[0]
            bound = float("inf") if le == "+Inf" else float(le)
            out[bound] = out.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def frame_counts(http_url: str) -> dict[str, float]:
    """Event frames sent so far by path: 'shared' (one encoding for a group) or 'queue' (a client's backlog)."""
    out: dict[str, float] = {}
    for line in httpx.get(http_url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("noc_websocket_frames_total{"):
            path = line.split('path="')[1].split('"')[0]
            out[path] = out.get(path, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """Upper bound (ms) of the bucket holding quantile ``q`` of the observations between two scrapes."""
    bounds = sorted(after)
    if not bounds:
        return float("nan")  # with --workers, the scrape may reach a worker that sent nothing
    total = after[bounds[-1]] - before.get(bounds[-1], 0.0)
    for b in bounds:
        if total and after[b] - before.get(b, 0.0) >= q * total:
            return b * 1000
    return float("nan")


def rss_mb(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        with open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
    return total


# -- REST --------------------------------------------------------------------------------------------------------

class RawConn:
    """A minimal HTTP/1.1 keep-alive client: the load generator must cost far less than the server."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port, self.token = host, port, token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 10)
        assert self.reader is not None and self.writer is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {self.token}\r\n\r\n"
                          .encode())
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 30)
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await asyncio.wait_for(self.reader.readexactly(length), 30)
        return status


async def fixed_rate(url: str, token: str, paths: list[str], rate: int, seconds: float,
                     conns: int = 32) -> tuple[list[float], int]:
    host, port = url.removeprefix("http://").split(":")
    lat: list[float] = []
    errors = 0
    jobs: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()

    async def worker() -> None:
        nonlocal errors
        c = RawConn(host, int(port), token)
        await c.get(paths[0])  # connect and warm the token cache
        while (job := await jobs.get()) is not None:
            i, scheduled = job
            if await c.get(paths[i % len(paths)]) >= 400:
                errors += 1
            lat.append((time.perf_counter() - scheduled) * 1000)
        if c.writer is not None:
            c.writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(conns)]
    await asyncio.sleep(0.5)
    n = int(rate * seconds)
    t0 = time.perf_counter()
    for i in range(n):
        scheduled = t0 + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        jobs.put_nowait((i, scheduled))
    for _ in workers:
        jobs.put_nowait(None)
    await asyncio.gather(*workers)
    return lat, errors


def rest_bench(url: str, token: str, rate: int, seconds: float) -> None:
    api = "/api/v2/noc"
    cases = {
        "/health (baseline, no auth, no DB)": ["/health"],
        "telemetry person, cached": [f"{api}/telemetry/signals/p-1?window_minutes=120"],
        "telemetry person, uncached": [f"{api}/telemetry/signals/p-1?window_minutes={m}"
                                       for m in range(60, 60 + int(rate * seconds))],
        "telemetry site, uncached": [f"{api}/telemetry/signals/site/s-1?window_minutes={m}"
                                     for m in range(60, 60 + int(rate * seconds))],
        "fraud heatmap, uncached": [f"{api}/security/fraud-scores/heatmap?hours={1 + m % 720}"
                                    f"&until={1_800_000_000_000 + m}" for m in range(int(rate * seconds))],
    }
    print(f"\nREST at {rate} req/s for {seconds:.0f} s each (latency from scheduled send, ms)")
    print(f"{'endpoint':40} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8} {'errors':>7}")
    for name, paths in cases.items():
        lat, errors = asyncio.run(fixed_rate(url, token, paths, rate, seconds))
        print(f"{name:40} {pct(lat, .5):8.2f} {pct(lat, .9):8.2f} {pct(lat, .99):8.2f} {max(lat):8.2f} {errors:7d}")


# -- WebSocket ---------------------------------------------------------------------------------------------------

def _mask_frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big"))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class WsClient(asyncio.Protocol):
    """A minimal WebSocket client (RFC 6455 framing) as a bare asyncio Protocol, so 1,000 receivers cost little
    next to the gateway: no stream reader, no task per message; frames are parsed straight off ``data_received``.
    Timed clients parse each frame's JSON for produce -> receipt latency; the others only count events."""

    MARKER = b'"event_id":"bench-'

    def __init__(self, token: str, hostport: str, path: str, timed: bool, expect: int, lat: list[float],
                 ready: Any, mode: str = "batched") -> None:
        self.token, self.hostport, self.path, self.timed, self.expect = token, hostport, path, timed, expect
        self.mode = mode  # "batched": noc.v1 + subscribe, frames of events; "events": the documented per-event mode
        self.lat, self.ready = lat, ready
        self.buf = bytearray()
        self.upgraded = False
        self.texts = 0
        self.got = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write((f"GET /{self.path} HTTP/1.1\r\nHost: {self.hostport}\r\nUpgrade: websocket\r\n"
                         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                         + (f"Sec-WebSocket-Protocol: noc.v1, bearer.{self.token}\r\n\r\n" if self.mode == "batched"
                            else f"Authorization: Bearer {self.token}\r\n\r\n")).encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(ConnectionError(f"connection lost: {exc!r}"))

    def _finish(self, exc: BaseException | None = None) -> None:
        if not self.done.done():
            if exc is None or self.got >= self.expect:
                self.done.set_result(None)
            else:
                self.done.set_exception(exc)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self._finish(RuntimeError(bytes(buf[:100]).decode(errors="replace")))
                return
            self.upgraded = True
            pos = end + 4
        n_buf = len(buf)
        while n_buf - pos >= 2:
            opcode, n = buf[pos] & 0x0F, buf[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if n_buf - pos < 4:
                    break
                n, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif n == 127:
                if n_buf - pos < 10:
                    break
                n, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if n_buf - pos < head + n:
                break
            payload = bytes(buf[pos + head:pos + head + n])
            pos += head + n
            if opcode == 0x1:
                self.on_text(payload)
            elif opcode == 0x9 and self.transport is not None:
                self.transport.write(_mask_frame(0xA, payload))
            elif opcode == 0x8:
                self._finish(ConnectionError(f"closed {payload[:2].hex()} {payload[2:].decode(errors='replace')}"))
        del buf[:pos]

    def on_text(self, raw: bytes) -> None:
        self.texts += 1
        if self.texts == 1 and self.mode == "events":  # hello: live from here on, nothing to send
            self.ready.put(1)
            return
        if self.texts == 1:  # hello
            assert self.transport is not None
            self.transport.write(_mask_frame(0x1, b'{"action":"subscribe"}'))
            return
        if self.texts == 2 and self.mode == "batched":  # subscribed
            self.ready.put(1)
            return
        if not self.timed:
            self.got += raw.count(self.MARKER)
        else:
            now = time.time() * 1000
            msg = orjson.loads(raw)
            for ev in msg["events"] if msg["type"] == "events" else [msg]:
                if str(ev.get("event_id", "")).startswith("bench-"):
                    self.got += 1
                    self.lat.append(now - ev["produced_at"])
        if self.got >= self.expect:
            self._finish()


def ws_client_proc(url: str, token: str, n: int, expect: int, ready: Any, go: Any, out: Any, timeout: float,
                   sample_every: int, first: int, mode: str = "batched") -> None:
    hostport, path = url.removeprefix("ws://").split("/", 1)
    host, port = hostport.split(":")

    async def main() -> None:
        lat: list[float] = []
        clients: list[WsClient] = []
        loop = asyncio.get_running_loop()
        for i in range(n):
            idx = first + i
            _, c = await asyncio.wait_for(loop.create_connection(
                lambda idx=idx: WsClient(token, hostport, path, idx % sample_every == 0, expect, lat, ready,  # type: ignore[misc]
                                         mode),
                host, int(port)), 30)
            clients.append(c)
            await asyncio.sleep(0.002)  # do not stampede the accept queue
        cpu0 = time.process_time()  # connected: from here on the receive loop is what costs
        gc.freeze()  # the load generator must not add its own collector pauses to what it measures
        gc.disable()
        done, _ = await asyncio.wait([c.done for c in clients], timeout=timeout)
        errors = [f.exception() for f in done if f.exception() is not None]
        if errors:
            print(f"{len(errors)} client(s) failed, e.g. {errors[0]!r}", file=sys.stderr)
        counts = [c.got for c in clients]
        for c in clients:
            if c.transport is not None:
                c.transport.close()
        out.put((lat, counts, time.process_time() - cpu0))

    asyncio.run(main())


def kafka_client_proc(bootstrap: str, topic_name: str, expect: int, ready: Any, out: Any, timeout: float) -> None:
    """The Kafka leg alone: a consumer configured as the gateway's feed consumer, produce -> poll latency."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-kafka-{os.getpid()}", "enable.auto.commit": False,
                  "fetch.wait.max.ms": 10, "fetch.min.bytes": 1})
    md = c.list_topics(topic_name, timeout=10)
    parts = [TopicPartition(topic_name, p) for p in md.topics[topic_name].partitions]
    c.assign([TopicPartition(topic_name, tp.partition, c.get_watermark_offsets(tp, timeout=10)[1]) for tp in parts])
    c.poll(0.1)
    ready.put(1)
    lat: list[float] = []
    cpu0 = time.process_time()
    deadline = time.monotonic() + timeout
    while len(lat) < expect and time.monotonic() < deadline:
        msg = c.poll(0.1)
        if msg is None or msg.error() is not None or b"bench-" not in (msg.value() or b""):
            continue
        lat.append(time.time() * 1000 - msg.timestamp()[1])
    c.close()
    out.put((lat, [len(lat)], time.process_time() - cpu0))


def ws_bench(url: str, token: str, feed: FeedProducer, gw_pid: int, clients: int, rate: int, seconds: float,
             procs: int, mode: str = "batched") -> dict[str, float]:
    """``clients`` WebSocket clients in ``procs`` processes; 0 clients: one plain Kafka consumer instead."""
    expect = int(rate * seconds)
    ctx = mp.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    rss0 = rss_mb(gw_pid)
    sample_every = max(1, clients // 50)
    firsts = [sum(per[:i]) for i in range(len(per))]
    ps = [ctx.Process(target=ws_client_proc, args=(url, token, k, expect, ready, go, out, seconds + 30, sample_every,
                                                   f, mode), daemon=True)
          for k, f in zip(per, firsts, strict=True) if k]
    if not clients:
        ps = [ctx.Process(target=kafka_client_proc, args=(settings().bootstrap, feed.topic, expect, ready, out,
                                                          seconds + 30), daemon=True)]
    for p in ps:
        p.start()
    deadline = time.monotonic() + 120
    for _ in range(max(1, clients)):
        ready.get(timeout=max(1, deadline - time.monotonic()))
    time.sleep(0.5)
    rss1 = rss_mb(gw_pid)
    run = uuid.uuid4().hex[:6]
    cpu0 = cpu_s(gw_pid)
    http_url = url.replace("ws://", "http://").split("/ws/")[0]
    hist0 = send_buckets(http_url)
    frames0 = frame_counts(http_url)
    t0 = time.perf_counter()
    for i in range(expect):
        target = t0 + i / rate
        while time.perf_counter() < target:
            time.sleep(max(0, min(0.001, target - time.perf_counter())))
        feed.send(noc_event("alert_created", f"bench-{run}-{i}", 1, {"n": i, "message": "x" * 100},
                            site_id="s-1"), flush=False)
    feed.flush()
    lat: list[float] = []
    counts: list[int] = []
    client_cpu = 0.0
    for _ in ps:
        part_lat, part_counts, part_cpu = out.get(timeout=seconds + 90)
        lat.extend(part_lat)
        counts.extend(part_counts)
        client_cpu += part_cpu
    wall = time.perf_counter() - t0
    cpu = (cpu_s(gw_pid) - cpu0) / wall
    ccpu = client_cpu / wall  # an upper bound: it includes the clients' idle wait before the first event
    hist1 = send_buckets(http_url)
    frames1 = frame_counts(http_url)
    shared = frames1.get("shared", 0.0) - frames0.get("shared", 0.0)
    queued = frames1.get("queue", 0.0) - frames0.get("queue", 0.0)
    for p in ps:
        p.join(10)
    delivered = sum(counts) / max(1, max(1, clients) * expect)
    return {"p50": pct(lat, .5), "p90": pct(lat, .9), "p99": pct(lat, .99), "max": max(lat) if lat else float("nan"),
            "delivered": delivered, "mem_kb_per_conn": (rss1 - rss0) * 1024 / max(1, clients), "rss_mb": rss1,
            "cpu": cpu,
            "client_cpu": ccpu, "shared_share": shared / max(1.0, shared + queued),
            "send_p50": bucket_quantile(hist0, hist1, .5), "send_p99": bucket_quantile(hist0, hist1, .99)}


def hub_cost(clients: int, events: int = 20) -> None:
    """CPU of the in-process fan-out alone (no sockets), per (event, client) delivery, for one tick of ``events``:
    the queue path (each client gets its own copy queued, then its frame built) against the shared-frame path
    (one frame for the group, one direct write per client; the write itself is not included)."""
    from gateway.hub import Client, FeedEvent, Hub, SharedFrame

    def run(direct: bool, mode: str = "batched") -> float:
        hub = Hub(2000)
        group = [Client(1, 10**9, paused=False, mode=mode) for _ in range(clients)]
        for c in group:
            if direct:
                c.direct = lambda frame: bool(frame.wire())
            hub.attach(c, None)
        evs = [FeedEvent(1, f"e{i}", "alert_created", "s", None, 0, i, 0, orjson.dumps(
            {"type": "alert_created", "event_id": f"e{i}", "timestamp": 1_780_000_000_000 + i, "tenant_id": 1,
             "site_id": "s", "person_id": None, "payload": {"n": i, "message": "x" * 100}, "cursor": f"0:{i}",
             "produced_at": 0})) for i in range(events)]
        t = time.perf_counter()
        hub.publish(evs)
        for c in group:
            if c.queue:
                SharedFrame(c.take(200)).payload()
        return (time.perf_counter() - t) / (events * clients) * 1e6

    print(f"\nin-process fan-out, {clients} clients x {events} events in one tick, per delivery: queue path "
          f"{run(False):.3f} us, shared frame {run(True):.3f} us, shared per-event frames (documented mode) "
          f"{run(True, 'events'):.3f} us (socket writes not included)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--events", type=int, default=1000, help="events/s in the fan-out run")
    ap.add_argument("--ws-seconds", type=float, default=10)
    ap.add_argument("--client-procs", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1, help="gateway processes (noc gateway --workers)")
    ap.add_argument("--loop", default="auto", help="uvicorn event loop (noc gateway --loop)")
    ap.add_argument("--http", default="auto", help="uvicorn HTTP implementation (noc gateway --http)")
    ap.add_argument("--skip-rest", action="store_true")
    ap.add_argument("--skip-ws", action="store_true")
    ap.add_argument("--ws-mode", default="both", choices=("batched", "events", "both"),
                    help="WebSocket clients: batched frames (noc.v1 + subscribe), the documented one event per "
                         "message, or both side by side")
    args = ap.parse_args()

    s = settings()
    schema = "bench_" + uuid.uuid4().hex[:8]
    ns = "bench" + uuid.uuid4().hex[:8]
    with psycopg.connect(s.pg_dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"CREATE SCHEMA {schema}".encode())
    dsn = f"{s.pg_dsn}{'&' if '?' in s.pg_dsn else '?'}options=-csearch_path%3D{schema}"
    apply_topics(s.bootstrap, ns)
    port = free_port()
    proc = None
    try:
        seed_rows(dsn)
        token = create_token(dsn, 1, ["noc:view"], label="bench")[1]
        proc = subprocess.Popen([sys.executable, "-m", "infra.cli", "gateway", "--port", str(port), "--dsn", dsn,
                                 "--bootstrap", s.bootstrap, "--namespace", ns, "--log-level", "warning",
                                 "--workers", str(args.workers), "--loop", args.loop, "--http", args.http],
                                # one token and one address for every load client: the per-token and per-address
                                # limits would otherwise be what is measured
                                env={**os.environ, "PYTHONUNBUFFERED": "1", "NOC_GATEWAY_WS_PER_TOKEN": "100000",
                                     "NOC_GATEWAY_REQUESTS_PER_TOKEN": "0", "NOC_GATEWAY_REQUESTS_PER_ADDRESS": "0"})
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("gateway did not start")
            time.sleep(0.2)
        print(f"gateway pid {proc.pid} on {url}; {os.cpu_count()} CPUs; loopback")
        if not args.skip_rest:
            rest_bench(url, token, args.rate, args.seconds)
        if not args.skip_ws:
            hub_cost(args.clients)
            feed = FeedProducer(s.bootstrap, ns)
            feed.send(noc_event("alert_created", "warm-up", 1, {}))  # the producer's start-up (idempotent PID)
            ws_url = url.replace("http://", "ws://") + "/ws/noc/dashboard"
            print(f"\nWebSocket fan-out, {args.events} events/s for {args.ws_seconds:.0f} s "
                  "(produce -> receipt, ms; sampled)")
            print(f"{'run':34} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8} {'delivered':>9} {'KB/conn':>8} "
                  f"{'gw CPU':>7} {'clients CPU':>11} {'send p50/p99 (gw)':>18} {'shared':>7}")
            modes = ["batched", "events"] if args.ws_mode == "both" else [args.ws_mode]
            runs = [("Kafka consumer alone (baseline)", 0, args.events, "batched")]
            for mode in modes:
                runs += [(f"1 client, {mode} (baseline)", 1, args.events, mode),
                         (f"{args.clients} clients, {mode}", args.clients, args.events, mode)]
                if args.events > 100:
                    runs.append((f"{args.clients} clients at 100 ev/s, {mode}", args.clients, 100, mode))
            for name, n, rate, mode in runs:
                r = ws_bench(ws_url, token, feed, proc.pid, n, rate, args.ws_seconds, max(1, min(args.client_procs, n)),
                             mode)
                print(f"{name:34} {r['p50']:8.1f} {r['p90']:8.1f} {r['p99']:8.1f} {r['max']:8.1f} "
                      f"{r['delivered']:9.1%} {r['mem_kb_per_conn'] if n > 1 else float('nan'):8.1f} "
                      f"{r['cpu']:7.0%} {r['client_cpu']:11.0%} {r['send_p50']:>8.1f}/{r['send_p99']:<8.1f} "
                      f"{r['shared_share']:7.1%}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(15)
        delete_namespace(s.bootstrap, ns)
        with psycopg.connect(s.pg_dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE".encode())


if __name__ == "__main__":
    main()
