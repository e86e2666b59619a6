"""Cross-language proof of the wire format: Apache Avro's Java BinaryMessageEncoder/Decoder and our serde
read each other's single-object bytes. Needs Java 17 and Maven (installed by infra/bootstrap.sh)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from infra.config import settings
from schemas.serde import SCHEMA_DIR, store

JAVA_DIR = Path(__file__).resolve().parent.parent / "interop" / "java"


@pytest.fixture(scope="module")
def java(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    out = settings().home / "interop"
    lib, classes = out / "lib", out / "classes"
    if not (classes / "AvroInterop.class").exists():
        subprocess.run(["mvn", "-q", "-B", "-f", str(JAVA_DIR / "pom.xml"), "dependency:copy-dependencies",
                        f"-DoutputDirectory={lib}"], check=True, timeout=300)
        subprocess.run(["javac", "-cp", f"{lib}/*", "-d", str(classes), str(JAVA_DIR / "src" / "AvroInterop.java")],
                       check=True, timeout=120)
    return ["java", "-cp", f"{lib}/*:{classes}", "AvroInterop"]


def _run(cmd: list[str]) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60).stdout.strip()


def test_fingerprints_agree_with_java(java: list[str]) -> None:
    for stem in ("noc_alert", "attendance_event", "correlated_incident"):
        got = int(_run([*java, "fingerprint", str(SCHEMA_DIR / f"{stem}.avsc")]), 16)
        assert got == store().current[stem].fingerprint, stem


def test_java_produces_and_we_decode(java: list[str], tmp_path: Path) -> None:
    # Avro's JSON encoding wraps union values in their branch name.
    avro_json = {"event_id": "a-77", "tenant_id": 2, "site_id": "s-9", "person_id": {"string": "p-3"},
                 "occurred_at": 1_793_491_200_000, "received_at": 1_793_491_200_450, "alert_type": "MAN_DOWN",
                 "severity": "CRITICAL", "message": "no movement for 10 min", "source": "wearable"}
    path = tmp_path / "alert.json"
    path.write_text(json.dumps(avro_json))
    data = bytes.fromhex(_run([*java, "encode", str(SCHEMA_DIR / "noc_alert.avsc"), str(path)]))
    stem, record = store().decode(data, expected="noc_alert")
    assert stem == "noc_alert"
    assert record == avro_json | {"person_id": "p-3"}


def test_we_produce_and_java_decodes(java: list[str]) -> None:
    record = {"event_id": "f-1", "tenant_id": 1, "site_id": "s-1", "person_id": None, "occurred_at": 5,
              "received_at": 6, "finding_type": "LOGBOOK_GAP", "severity": "HIGH",
              "evidence_summary": "logbook empty 02:00-04:00", "auditor_id": "aud-7", "evidence_urls": ["u1"]}
    data = store().encode("audit_finding", record)
    out = json.loads(_run([*java, "decode", str(SCHEMA_DIR / "audit_finding.avsc"), data.hex()]))
    assert out == record | {"auditor_id": {"string": "aud-7"}}
