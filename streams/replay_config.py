"""What-if settings: ``--set section.field=value`` overrides on the pipeline's frozen configuration.

Sections are the dataclass-valued fields of :class:`streams.core.pipeline.PipelineConfig` (``correlation``,
``escalation``, ``validation`` and whatever else the pipeline gains, e.g. windows and baselines), plus a
few names analysts ask for: ``anomaly.threshold`` (the baselines' starting z threshold),
``fraud.threshold`` (the fraud probability that opens a ticket) and top-level fields such as
``pipeline.grace_ms``. A field may drop its ``_ms`` suffix and then takes a duration
(``correlation.window=30m``). Values are coerced to the default's type; unknown names are refused with the
list of known ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from simulator.config import parse_duration
from streams.core.pipeline import PipelineConfig
from streams.core.sites import SiteConfig
from streams.site_stage import config_from_env

# alias -> the field name to look for in any section (the first section having it wins)
ALIASES: dict[str, str] = {
    "anomaly.threshold": "default_threshold",
    "fraud.threshold": "fraud_threshold",
    "fraud.cooldown": "fraud_cooldown_ms",
}
TOP = "pipeline"  # section name of PipelineConfig's own scalar fields (grace_ms, ...)
BASELINES = "baselines"  # the site stage's baselines (SiteConfig.baselines), beside the pipeline's sections


class OverrideError(ValueError):
    """A ``--set`` the replay cannot apply."""


@dataclass(frozen=True)
class ReplayConfig:
    """The pipeline configuration a replay runs with; ``overrides`` lists what differs from the live one."""

    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    sites: SiteConfig = field(default_factory=config_from_env)  # the worker's (NOC_SITE_CONFIG)
    model_version: str | None = None  # None: the source namespace's active models (its model-events topic)
    overrides: tuple[tuple[str, str], ...] = ()

    @property
    def is_live(self) -> bool:
        return not self.overrides and self.model_version is None

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.overrides]
        if self.model_version:
            parts.append(f"model={self.model_version}")
        return ", ".join(parts) or "live configuration"

    @property
    def fraud_threshold(self) -> float:
        return float(self.pipeline.escalation.fraud_threshold)


def sections(cfg: PipelineConfig, sites: SiteConfig | None = None) -> dict[str, Any]:
    """Section name -> the nested config dataclass (the site stage's baselines as ``baselines``)."""
    out = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
           if dataclasses.is_dataclass(getattr(cfg, f.name))}
    if sites is not None:
        out[BASELINES] = sites.baselines
    return out


def _coerce(raw: str, default: Any, is_ms: bool) -> Any:
    try:
        if isinstance(default, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"not a boolean: {raw!r}")
        if is_ms:
            return int(raw) if raw.isdigit() else parse_duration(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError as exc:
        raise OverrideError(str(exc)) from exc
    if isinstance(default, tuple):
        return tuple(x.strip() for x in raw.split(",") if x.strip())
    return raw


def parse_assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise OverrideError(f"expected key=value, got {text!r}")
    return name.strip(), value.strip()


def _resolve(name: str, secs: dict[str, Any], top: PipelineConfig) -> tuple[str, str]:
    """(section, field) for a user-facing name."""
    if name in ALIASES:
        want = ALIASES[name]
        for sec, conf in secs.items():
            if want in {f.name for f in dataclasses.fields(conf)}:
                return sec, want
        raise OverrideError(f"{name} is not available: no pipeline component has {want!r} yet")
    section, _, fname = name.partition(".")
    obj: Any
    if section == TOP:
        obj = top
        names = {f.name for f in dataclasses.fields(top) if f.name not in secs}
    elif section in secs:
        obj = secs[section]
        names = {f.name for f in dataclasses.fields(obj)}
    else:
        raise OverrideError(f"unknown setting {name!r}: sections are {', '.join(sorted([*secs, TOP]))} "
                            f"(aliases: {', '.join(sorted(ALIASES))})")
    if fname in names:
        return section, fname
    if f"{fname}_ms" in names:
        return section, f"{fname}_ms"
    raise OverrideError(f"unknown setting {name!r}; {section} has {', '.join(sorted(names))}")


def apply_overrides(assignments: Iterable[str], model_version: str | None = None,
                    base: ReplayConfig | None = None) -> ReplayConfig:
    """A :class:`ReplayConfig` with each ``name=value`` applied in order (later ones win)."""
    cfg = base or ReplayConfig()
    top, sites = cfg.pipeline, cfg.sites
    applied = list(cfg.overrides)
    for text in assignments:
        name, raw = parse_assignment(text)
        secs = sections(top, sites)
        section, fname = _resolve(name, secs, top)
        obj = top if section == TOP else secs[section]
        value = _coerce(raw, getattr(obj, fname), fname.endswith("_ms"))
        try:
            if section == BASELINES:
                sites = dataclasses.replace(sites, baselines=dataclasses.replace(sites.baselines, **{fname: value}))
            else:
                changes: dict[str, Any] = {fname: value} if section == TOP else \
                    {section: dataclasses.replace(obj, **{fname: value})}
                top = dataclasses.replace(top, **changes)
        except (ValueError, TypeError) as exc:
            raise OverrideError(f"{name}={raw}: {exc}") from exc
        applied.append((name, raw))
    # the site stage correlates a site's evidence with the pipeline's correlation settings
    sites = dataclasses.replace(sites, correlation=top.correlation)
    return ReplayConfig(pipeline=top, sites=sites,
                        model_version=model_version if model_version is not None else cfg.model_version,
                        overrides=tuple(applied))


def as_dict(cfg: ReplayConfig) -> dict[str, Any]:
    """JSON-able view (for the replay manifest)."""
    return {"model_version": cfg.model_version, "overrides": [list(o) for o in cfg.overrides],
            "pipeline": dataclasses.asdict(cfg.pipeline), "sites": dataclasses.asdict(cfg.sites)}
