"""deploy/examples/ and the Dockerfile agree with the schemas, the contract and the chart."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from chart_helpers import EXAMPLES, FULLNAME, KUBE_VERSIONS, REPO, of_kind, one, render, validate_keda

CONTRACTS = (REPO / "docs" / "CONTRACTS.md").read_text()


def contract_trigger_keys() -> tuple[set[str], set[str]]:
    """(keys the scaler owns, KEDA's own keys it ignores), from docs/CONTRACTS.md."""
    start = CONTRACTS.index("Trigger metadata keys:")
    para = CONTRACTS[start:].split("\n\n")[0]
    own_part, keda_part = para.split("Keys KEDA adds itself")
    return set(re.findall(r"`(\w+)`", own_part)), set(re.findall(r"`(\w+)`", keda_part))


def contract_worker_queue_keys() -> set[str]:
    block = CONTRACTS.split("Worker-queue file:")[1].split("```yaml")[1].split("```")[0]
    return set(re.findall(r"^\s*#?\s*-?\s*(\w+):", block, re.M)) - {"workerQueues"}


# ------------------------------------------------------------------ plain ScaledObject


def example_docs(name: str = "scaledobject.yaml") -> list[dict]:
    return [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]


def test_plain_scaled_object_matches_keda_crds():
    docs = example_docs()
    assert [d["kind"] for d in docs] == ["ScaledObject"]
    tls_docs = example_docs("scaledobject-mtls.yaml")
    assert sorted(d["kind"] for d in tls_docs) == ["ScaledObject", "TriggerAuthentication"]
    for doc in docs + tls_docs:
        validate_keda(doc)


def check_trigger(so: dict) -> dict:
    own, keda = contract_trigger_keys()
    assert {"workerQueue", "queues", "maxTasksPerWorker"} <= own and "scalerAddress" in keda
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] in ("external", "external-push")
    assert set(trigger["metadata"]) <= own | keda
    md = trigger["metadata"]
    # Same namespace as the chart's default install and the ScaledObject itself.
    assert md["scalerAddress"] == f"airflow-keda-scaler.{so['metadata']['namespace']}.svc.cluster.local:9090"
    assert so["metadata"]["namespace"] == "airflow"
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (
        int(md["minWorkers"]),
        int(md["maxWorkers"]),
    )
    return trigger


def test_plain_scaled_object_uses_only_contract_keys_and_plaintext():
    (so,) = example_docs()
    trigger = check_trigger(so)
    # Plaintext like the chart's default (tls.enabled: false).
    assert "enableTLS" not in trigger["metadata"] and "authenticationRef" not in trigger


def test_mtls_scaled_object_takes_pem_from_a_trigger_authentication():
    docs = example_docs("scaledobject-mtls.yaml")
    so = next(d for d in docs if d["kind"] == "ScaledObject")
    trigger = check_trigger(so)
    assert trigger["metadata"]["enableTLS"] == "true"
    auth = next(d for d in docs if d["kind"] == "TriggerAuthentication")
    assert auth["metadata"]["namespace"] == so["metadata"]["namespace"]
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} == {"caCert", "tlsClientCert", "tlsClientKey"}


# ------------------------------------------------------------------ worker-queue file


def test_worker_queue_file_uses_contract_keys_and_is_what_the_chart_renders():
    example = yaml.safe_load((EXAMPLES / "worker-queues.yaml").read_text())
    allowed = contract_worker_queue_keys()
    assert {"name", "queues", "maxTasksPerWorker", "minWorkers", "maxWorkers"} <= allowed
    for entry in example["workerQueues"]:
        assert set(entry) <= allowed
    # The chart fed the same list renders the same file: one format, one source.
    docs = render({"workerQueues": example["workerQueues"]})
    rendered = yaml.safe_load(one(docs, "ConfigMap", FULLNAME)["data"]["worker-queues.yaml"])
    assert rendered == example
    assert len(of_kind(docs, "ScaledObject")) == len(example["workerQueues"])


# ------------------------------------------------------------------ webhook policy


def test_webhook_policy_example_renders_unchanged_into_the_chart():
    """deploy/examples/webhook-policy.yaml (written with the webhook) passes through the chart's
    `webhook.policy` value into the policy ConfigMap unchanged."""
    path = EXAMPLES / "webhook-policy.yaml"
    if not path.exists():
        pytest.skip("deploy/examples/webhook-policy.yaml not written yet")
    policy = yaml.safe_load(path.read_text())
    docs = render({"webhook": {"enabled": True, "policy": policy}})
    cm = one(docs, "ConfigMap", f"{FULLNAME}-webhook-policy")
    assert yaml.safe_load(cm["data"]["policy.yaml"]) == policy


# ------------------------------------------------------------------ Dockerfile


DOCKERFILE = REPO / "deploy" / "Dockerfile"


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_builds_the_one_binary_as_non_root():
    text = DOCKERFILE.read_text()
    cargo = tomllib.loads((REPO / "Cargo.toml").read_text())
    (binary,) = [b["name"] for b in cargo["bin"]]
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    assert len(stages) >= 2, "multi-stage"
    runtime = text[text.rindex("\nFROM ") :]
    assert re.search(r"^USER\s+(\d+):(\d+)\s*$", runtime, re.M) and not re.search(r"^USER\s+(0|root)\b", runtime, re.M)
    assert f'ENTRYPOINT ["/usr/local/bin/{binary}"]' in runtime
    assert f"--bin {binary}" in text and "--locked" in text
    # The builder's Rust is the crate's rust-version.
    assert re.search(rf"^ARG RUST_VERSION={re.escape(cargo['package']['rust-version'])}$", text, re.M)
    # Everything the build copies exists, and everything the build needs is copied.
    copied = set()
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M):
        copied |= set(line.split()[:-1])
    for src in copied:
        assert (REPO / src).exists(), src
    assert {"Cargo.toml", "Cargo.lock", "build.rs", "src", "proto"} <= {
        c.rstrip("/").removeprefix("./") for c in copied
    }


def test_sources_the_build_embeds_are_in_the_build_context():
    """include_str!/include_bytes! of files outside src/ and proto/ would break the image build."""
    for rs in (REPO / "src").rglob("*.rs"):
        for rel in re.findall(r'include_(?:str|bytes)!\(\s*"([^"]+)"', rs.read_text()):
            target = (rs.parent / rel).resolve()
            assert target.is_relative_to(REPO / "src") or target.is_relative_to(REPO / "proto"), f"{rs}: {rel}"


def test_chart_ports_are_the_images_ports():
    exposed = set(map(int, re.search(r"^EXPOSE (.+)$", DOCKERFILE.read_text(), re.M).group(1).split()))
    docs = render({"webhook": {"enabled": True}})
    ports = {
        p["containerPort"]
        for d in of_kind(docs, "Deployment")
        for c in d["spec"]["template"]["spec"]["containers"]
        for p in c["ports"]
    }
    assert ports == exposed


def test_chart_kube_version_floor_is_the_oldest_checked():
    chart = yaml.safe_load((REPO / "deploy/helm/airflow-keda-scaler/Chart.yaml").read_text())
    assert chart["kubeVersion"] == f">={KUBE_VERSIONS[0]}-0"
