"""Cross-checks against the built binary: every flag the chart passes exists, and the policy the
chart renders is accepted. Opt-in, since it needs a build: set AIRFLOW_KEDA_SCALER_BIN to the
binary (e.g. target/debug/airflow-keda-scaler after `cargo build`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from chart_helpers import EXAMPLES, FULLNAME, container, one, render

BIN = os.environ.get("AIRFLOW_KEDA_SCALER_BIN")
pytestmark = pytest.mark.skipif(not BIN, reason="set AIRFLOW_KEDA_SCALER_BIN to cross-check the binary")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "values, deployment",
    [
        (
            {
                "tls": {"enabled": True},
                "database": {"schema": "s", "pgbouncer": True, "passwordSecret": {"name": "p", "key": "k"}},
            },
            FULLNAME,
        ),
        ({"webhook": {"enabled": True}}, f"{FULLNAME}-webhook"),
    ],
)
def test_every_flag_and_variable_the_chart_passes_exists(values, deployment):
    c = container(one(render(values), "Deployment", deployment))
    args = c["args"]
    help_text = run(args[0], "--help")
    assert help_text.returncode == 0, help_text.stderr
    for flag in (a for a in args if a.startswith("--")):
        assert flag in help_text.stdout, f"`{args[0]}` has no {flag}"
    # Environment variables of this program: each is a flag's `AIRFLOW_KEDA_SCALER_<FLAG>`.
    for env in c.get("env", []):
        name = env["name"]
        if name.startswith("AIRFLOW_KEDA_SCALER_"):
            flag = "--" + name.removeprefix("AIRFLOW_KEDA_SCALER_").lower().replace("_", "-")
            assert flag in help_text.stdout, f"{name}: `{args[0]}` has no {flag}"


def test_rendered_policies_are_valid(tmp_path: Path):
    policies = [{}]
    if (EXAMPLES / "webhook-policy.yaml").exists():
        policies.append(yaml.safe_load((EXAMPLES / "webhook-policy.yaml").read_text()))
    for i, policy in enumerate(policies):
        docs = render({"webhook": {"enabled": True, "policy": policy}})
        path = tmp_path / f"policy-{i}.yaml"
        path.write_text(one(docs, "ConfigMap", f"{FULLNAME}-webhook-policy")["data"]["policy.yaml"])
        result = run("validate-policy", str(path))
        assert result.returncode == 0, result.stdout + result.stderr
