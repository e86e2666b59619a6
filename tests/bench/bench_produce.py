"""Simulator → Kafka produce rate with confluent-kafka, beside its parts and the raw producer ceiling.

    python tests/bench/bench_produce.py [--days 3] [--bootstrap 127.0.0.1:9092]

Needs the local broker (`noc infra up`). In one run, on the same simulated world, it measures:
generate only; generate + Avro encode; produce of pre-encoded bytes (the client's ceiling); and the whole
`noc simulate` path (generate + encode + produce, delivery confirmed). Topics go to a throwaway namespace,
deleted at the end. The aim (issue 2): at least 50,000 events/s produced by one process.
"""

from __future__ import annotations

import argparse
import resource
import time
import uuid

from confluent_kafka import Producer

from infra.config import settings
from infra.topics_admin import apply_topics, delete_namespace
from schemas.topics import topic
from simulator.config import DAY_MS, SimConfig
from simulator.encoding import encoders
from simulator.generate import Simulation, generate
from simulator.produce import producer_config, simulate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=float, default=3.0, help="simulated span (default 3 days ≈ 300k records)")
    ap.add_argument("--bootstrap", default=settings().bootstrap)
    args = ap.parse_args()
    cfg = SimConfig(seed=1, span=int(args.days * DAY_MS))

    t0 = time.perf_counter()
    n = sum(1 for _ in generate(cfg))
    gen_s = time.perf_counter() - t0

    enc = encoders()
    t0 = time.perf_counter()
    encoded = [(sr.topic, sr.key, enc[sr.stem](sr.record)) for sr in Simulation(cfg)]
    genc_s = time.perf_counter() - t0

    ns = "bench" + uuid.uuid4().hex[:8]
    apply_topics(args.bootstrap, ns)
    try:
        names = {short: topic(short, ns) for short in {t for t, _, _ in encoded}}
        p = Producer(producer_config(args.bootstrap))
        t0 = time.perf_counter()
        for i, (short, key, value) in enumerate(encoded):
            while True:
                try:
                    p.produce(names[short], value, key)
                    break
                except BufferError:
                    p.poll(0.05)
            if i % 1024 == 0:
                p.poll(0)
        left = p.flush(60)
        raw_s = time.perf_counter() - t0
        assert left == 0, f"{left} undelivered"

        rep = simulate(cfg, args.bootstrap, ns, progress=None)
        assert rep.ok, rep.errors
    finally:
        delete_namespace(args.bootstrap, ns)

    mb = sum(len(v) for _, _, v in encoded) / 1e6
    print(f"world: {cfg.tenants} tenants x {cfg.sites_per_tenant} sites x {cfg.guards_per_site} guards, "
          f"{args.days:g} simulated days = {n:,} records ({mb:.1f} MB Avro)")
    print(f"{'stage':44} {'records/s':>12}")
    print(f"{'generate only':44} {n / gen_s:>12,.0f}")
    print(f"{'generate + encode':44} {n / genc_s:>12,.0f}")
    print(f"{'produce pre-encoded bytes (client ceiling)':44} {n / raw_s:>12,.0f}")
    print(f"{'noc simulate: generate+encode+produce, acked':44} {rep.rate:>12,.0f}")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"simulate / ceiling: {rep.rate / (n / raw_s):.2f}; aim >= 50,000/s: "
          f"{'met' if rep.rate >= 50_000 else 'NOT met'}; peak RSS {rss_mb:.0f} MB")


if __name__ == "__main__":
    main()
