"""deploy/: the Helm chart (lint, render, every container a real noc command, probes on the real endpoints,
KafkaTopic resources equal to the catalogue), the container build file and the systemd units.

Helm is built by infra/bootstrap.sh into .cache/helm/bin (from the Go module proxy); without it these tests fail
with that advice rather than skip.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.cli import build_parser
from infra.config import REPO_ROOT
from infra.deploy_topics import TOPICS_JSON, catalogue_topics, render
from infra.topics_admin import durability
from schemas.topics import CATALOGUE

CHART = REPO_ROOT / "deploy" / "helm" / "nocstream"
HELM = REPO_ROOT / ".cache" / "helm" / "bin" / "helm"
SYSTEMD = REPO_ROOT / "deploy" / "systemd"
ALL_ON = ["--set", "keda.enabled=true", "--set", "strimzi.topics=true"]


def _helm(*args: str) -> str:
    helm = str(HELM) if HELM.exists() else shutil.which("helm")
    if helm is None:
        pytest.fail(f"helm not found at {HELM}: run `bash infra/bootstrap.sh` (it builds helm from the Go proxy)")
    proc = subprocess.run([helm, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _rendered(*extra: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(_helm("template", "t", str(CHART), *extra)) if d]


def test_chart_lints_strictly_with_and_without_the_optional_resources() -> None:
    _helm("lint", "--strict", str(CHART))
    _helm("lint", "--strict", str(CHART), *ALL_ON)


def _parse(argv: list[str]) -> argparse.Namespace:
    assert argv[0] == "noc", argv
    try:
        return build_parser().parse_args(argv[1:])
    except SystemExit as exc:  # argparse's way of refusing a flag or a subcommand
        raise AssertionError(f"`{' '.join(argv)}` is not a command noc accepts") from exc


def test_every_container_runs_a_real_noc_command_and_probes_its_real_endpoints() -> None:
    docs = _rendered(*ALL_ON)
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == {"t-worker", "t-sink", "t-gateway"}
    seen = set()
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]["spec"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"] == labels
        for c in pod["containers"]:
            args = _parse(c["command"] + c.get("args", []))
            seen.add(args.command)
            port = args.port if args.command == "gateway" else args.metrics_port
            assert port, f"{name}: no port serves the probes"
            assert {p["containerPort"] for p in c["ports"]} >= {port}
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"),
                                ("startupProbe", "/healthz")):
                assert c[probe]["httpGet"] == {"path": path, "port": port}, (name, probe)
            env = [e["configMapRef"]["name"] if "configMapRef" in e else e["secretRef"]["name"] for e in c["envFrom"]]
            assert env == ["t-nocstream", "t-nocstream"]
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
        assert pod["terminationGracePeriodSeconds"] >= 30
    assert seen == {"worker", "sink", "gateway"}
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    assert {"NOC_BOOTSTRAP", "NOC_NAMESPACE"} <= set(config) and config["NOC_METRICS_ADDR"] == "0.0.0.0"
    assert "NOC_PG_DSN" in next(d for d in docs if d["kind"] == "Secret")["stringData"]
    service = next(d for d in docs if d["kind"] == "Service")
    assert service["spec"]["selector"] == deployments["t-gateway"]["spec"]["selector"]["matchLabels"]
    pdbs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PodDisruptionBudget"}
    assert set(pdbs) == set(deployments)
    for name, pdb in pdbs.items():
        assert pdb["spec"]["selector"] == deployments[name]["spec"]["selector"]
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d["spec"]["triggers"][0]["metadata"] for d in docs
              if d["kind"] == "ScaledObject"}
    assert scaled["t-worker"]["consumerGroup"] == "noc.noc-worker-pipeline"  # streams.input_loop.pipeline_group
    sink_args = _parse(deployments["t-sink"]["spec"]["template"]["spec"]["containers"][0]["command"])
    assert scaled["t-sink"]["consumerGroup"] == sink_args.group


def test_the_optional_resources_are_off_by_default() -> None:
    kinds = {d["kind"] for d in _rendered()}
    assert "KafkaTopic" not in kinds and "ScaledObject" not in kinds


def test_kafka_topics_equal_the_catalogue() -> None:
    assert TOPICS_JSON.read_text() == render(), "run `python -m infra.deploy_topics` after changing schemas/topics.py"
    docs = [d for d in _rendered(*ALL_ON, "--set", "namespace=live") if d["kind"] == "KafkaTopic"]
    got = {d["spec"]["topicName"]: d["spec"] for d in docs}
    dur = durability(3)
    want = {s.name("live"): {"topicName": s.name("live"), "partitions": s.partitions,
                             "replicas": dur.replication_factor, "config": {**s.config(), **dur.config}}
            for s in CATALOGUE}
    assert got == want
    assert {d["metadata"]["labels"]["strimzi.io/cluster"] for d in docs} == {"noc-kafka"}
    assert len(catalogue_topics()) == len(CATALOGUE)


def test_container_build_installs_with_the_script_ci_runs() -> None:
    text = (REPO_ROOT / "deploy" / "Containerfile").read_text()
    runs = re.findall(r"^RUN (.+)$", text, re.M)
    assert "bash infra/bootstrap.sh --runtime" in runs
    copied = set(re.findall(r"^COPY (\S+) ", text, re.M))
    import tomllib

    packages = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert {p.rstrip("*") for p in packages["include"]} <= copied, "a package the image would lack"


def _units() -> list[Path]:
    return sorted(SYSTEMD.glob("*.service"))


def test_systemd_units_run_real_noc_commands_and_verify(tmp_path: Path) -> None:
    assert {u.name for u in _units()} == {"noc-worker@.service", "noc-sink@.service", "noc-gateway.service"}
    for unit in _units():
        text = unit.read_text()
        exec_start = re.search(r"^ExecStart=/bin/sh -c 'exec (.+)'$", text, re.M)
        assert exec_start, unit
        argv = exec_start.group(1).replace("$$((9100 + 10 * %i))", "9110").replace("$$((9200 + %i))", "9201")
        _parse(argv.replace("%i", "1").split())
        assert "Restart=on-failure" in text and "KillSignal=SIGTERM" in text
        assert "EnvironmentFile=/etc/nocstream/env" in text
    env = dict(line.split("=", 1) for line in (SYSTEMD / "nocstream.env").read_text().splitlines()
               if line and not line.startswith("#"))
    assert {"NOC_BOOTSTRAP", "NOC_PG_DSN", "NOC_METRICS_ADDR"} <= set(env)
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return  # infra/bootstrap.sh installs it; the checks above still ran
    for unit in _units():
        name = unit.name.replace("@.service", "@1.service")
        shutil.copy(unit, tmp_path / unit.name)
        proc = subprocess.run([analyze, "verify", "--man=no", f"./{name}"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0 and not proc.stderr.strip() and not proc.stdout.strip(), \
            f"{unit.name}: {proc.stdout}{proc.stderr}"


def test_generated_topics_file_is_json_the_chart_reads() -> None:
    data = json.loads(TOPICS_JSON.read_text())
    assert [t["short"] for t in data] == [s.short for s in CATALOGUE]
