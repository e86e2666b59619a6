"""Model artifact: one self-describing JSON file per model, checked by sha256 before loading.

``{"format": "nocstream-model/1", "version", "algorithm", "feature_names", "feature_hash", "margin_offset",
"booster", "calibration"}`` where ``booster`` is the library's own text form (xgboost JSON model, LightGBM
model string), ``margin_offset`` is added to the raw log-odds to undo the prior shift of class re-weighting
(fitted so the mean probability on the training rows equals their fraud rate), and ``calibration`` (optional)
maps the offset log-odds to a probability calibrated on held-out rows: ``{"method": "isotonic", "x": [...],
"y": [...]}``, interpolated linearly between the knots and flat beyond them, so that a score of 0.80 means
about 80% of such punches were fraud in the holdout. Artifacts without it use the sigmoid.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = "nocstream-model/1"
ALGORITHMS = ("xgboost", "lightgbm")


class ArtifactError(ValueError):
    """An artifact that cannot be used: wrong checksum, format or feature list."""


@dataclass(frozen=True, slots=True)
class Artifact:
    version: str
    algorithm: str
    feature_names: tuple[str, ...]
    feature_hash: str
    margin_offset: float
    booster: str
    calibration: dict[str, Any] | None = None

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {"format": FORMAT, "version": self.version, "algorithm": self.algorithm,
                               "feature_names": list(self.feature_names), "feature_hash": self.feature_hash,
                               "margin_offset": self.margin_offset, "booster": self.booster}
        if self.calibration is not None:
            doc["calibration"] = self.calibration
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Artifact:
        try:
            doc = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"not a model artifact: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ArtifactError(f"not a {FORMAT} artifact")
        if doc["algorithm"] not in ALGORITHMS:
            raise ArtifactError(f"unknown algorithm {doc['algorithm']!r}")
        cal = doc.get("calibration")
        if cal is not None and not (isinstance(cal, dict) and cal.get("method") == "isotonic"
                                    and len(cal.get("x") or []) == len(cal.get("y") or []) > 0):
            raise ArtifactError("calibration must be {method: isotonic, x: [...], y: [...]} of equal length")
        return cls(doc["version"], doc["algorithm"], tuple(doc["feature_names"]), doc["feature_hash"],
                   float(doc["margin_offset"]), doc["booster"], cal)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_artifact(art: Artifact, directory: Path) -> tuple[Path, str]:
    """Write ``<directory>/<version>.json`` atomically; return its path and sha256."""
    directory.mkdir(parents=True, exist_ok=True)
    data = art.to_bytes()
    path = directory / f"{art.version}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path, sha256_bytes(data)


def read_artifact(path: Path | str, expected_sha256: str | None = None) -> tuple[Artifact, str]:
    """Read and verify an artifact; return it with its sha256."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read {path}: {exc}") from exc
    sha = sha256_bytes(data)
    if expected_sha256 is not None and sha != expected_sha256:
        raise ArtifactError(f"{path}: sha256 {sha[:12]}… does not match the expected {expected_sha256[:12]}…")
    return Artifact.from_bytes(data), sha
