"""Avro single-object encode/decode records/s beside orjson, on the same records, in one run.

    python tests/bench/bench_serde.py [--records 50000]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

import orjson

from schemas.serde import store


def attendance(i: int, rng: random.Random) -> dict[str, object]:
    return {
        "event_id": f"{rng.getrandbits(128):032x}", "tenant_id": 1 + i % 2, "site_id": f"s-{i % 40:03d}",
        "person_id": f"p-{i % 4000:05d}", "occurred_at": 1_793_491_200_000 + i * 1000,
        "received_at": 1_793_491_200_000 + i * 1000 + rng.randrange(50, 900),
        "event_type": "CHECK_IN" if i % 2 else "CHECK_OUT", "shift_id": f"sh-{i:07d}",
        "lat": -1.2921 + rng.uniform(-0.01, 0.01), "lon": 36.8219 + rng.uniform(-0.01, 0.01),
        "accuracy_m": rng.uniform(3, 30), "device_id": f"d-{i % 4000:05d}", "is_mock_location": False,
        "face_match_score": rng.random(),
    }


def rate(n: int, fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=50_000)
    n = ap.parse_args().records
    rng = random.Random(7)
    records = [attendance(i, rng) for i in range(n)]
    s = store()
    avro = [s.encode("attendance_event", r) for r in records]
    js = [orjson.dumps(r) for r in records]
    rows = [
        ("avro single-object", rate(n, lambda: [s.encode("attendance_event", r) for r in records]),
         rate(n, lambda: [s.decode(b, "attendance_event") for b in avro]), sum(map(len, avro)) / n),
        ("orjson", rate(n, lambda: [orjson.dumps(r) for r in records]),
         rate(n, lambda: [orjson.loads(b) for b in js]), sum(map(len, js)) / n),
    ]
    print(f"records: {n} attendance events (14 fields), one at a time, one process")
    print(f"{'format':20} {'encode rec/s':>14} {'decode rec/s':>14} {'bytes/rec':>10}")
    for name, enc, dec, size in rows:
        print(f"{name:20} {enc:>14,.0f} {dec:>14,.0f} {size:>10.1f}")
    print(f"avro/orjson: encode {rows[0][1] / rows[1][1]:.2f}x, decode {rows[0][2] / rows[1][2]:.2f}x, "
          f"size {rows[0][3] / rows[1][3]:.2f}x")


if __name__ == "__main__":
    main()
