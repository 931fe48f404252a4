"""Cross-checks against the built binary: every flag and environment variable the chart passes
exists, and the policy the chart renders is accepted. Opt-in, since it needs a build: set
AIRFLOW_KEDA_SCALER_BIN to the binary (e.g. target/debug/airflow-keda-scaler after `cargo build`)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from chart_helpers import EXAMPLES, FULLNAME, container, one, render

BIN = os.environ.get("AIRFLOW_KEDA_SCALER_BIN")
pytestmark = pytest.mark.skipif(not BIN, reason="set AIRFLOW_KEDA_SCALER_BIN to cross-check the binary")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=60)


def help_of(subcommand: str) -> str:
    result = run(subcommand, "--help")
    assert result.returncode == 0, result.stderr
    return result.stdout


def flags_in(help_text: str) -> set[str]:
    """Every long flag `--help` documents (a whole word: `--log` is not `--log-format`)."""
    return set(re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)", help_text))


def env_vars_in(help_text: str) -> set[str]:
    """Every environment variable `--help` documents: clap prints `[env: NAME=value]`, or
    `[env: NAME]` for hidden values (the line may wrap after `env:`)."""
    return set(re.findall(r"\[env:\s+([A-Z0-9_]+)", help_text))


def unknown_to(subcommand: str, container_spec: dict) -> list[str]:
    """The flags and environment variables of this program in `container_spec` that
    `airflow-keda-scaler <subcommand>` does not read."""
    help_text = help_of(subcommand)
    flags, envs = flags_in(help_text), env_vars_in(help_text)
    problems = [
        f"`{subcommand}` has no {a}"
        for a in container_spec.get("args", [])
        if a.startswith("--") and a.split("=", 1)[0] not in flags
    ]
    problems += [
        f"`{subcommand}` does not read {e['name']}"
        for e in container_spec.get("env", [])
        if e["name"].startswith("AIRFLOW_KEDA_SCALER_") and e["name"] not in envs
    ]
    return problems


SCALER_VALUES = {
    "tls": {"enabled": True},
    "database": {"schema": "s", "pgbouncer": True, "passwordSecret": {"name": "p", "key": "k"}},
}


@pytest.mark.parametrize(
    "values, deployment",
    [
        (SCALER_VALUES, FULLNAME),
        ({"webhook": {"enabled": True}}, f"{FULLNAME}-webhook"),
    ],
)
def test_every_flag_and_variable_the_chart_passes_exists(values, deployment):
    c = container(one(render(values), "Deployment", deployment))
    assert unknown_to(c["args"][0], c) == []


def test_every_variable_help_documents_is_found():
    """The parser of `--help` sees each command's variables, webhook ones included (their names
    are not `AIRFLOW_KEDA_SCALER_<FLAG>`: see README, Configuration reference)."""
    serve, webhook = env_vars_in(help_of("serve")), env_vars_in(help_of("webhook"))
    assert {"AIRFLOW_KEDA_SCALER_DATABASE_URL", "AIRFLOW_KEDA_SCALER_WORKER_QUEUES"} <= serve
    assert {"AIRFLOW_KEDA_SCALER_WEBHOOK_POLICY", "AIRFLOW_KEDA_SCALER_WEBHOOK_ADMIN_ADDR"} <= webhook
    assert len(serve) >= 15 and len(webhook) >= 10, (serve, webhook)


@pytest.mark.parametrize(
    "deployment, key, env, wrong",
    [
        # A variable of the right program is accepted ...
        (f"{FULLNAME}-webhook", "webhook", "AIRFLOW_KEDA_SCALER_WEBHOOK_MAX_BODY_BYTES", False),
        (FULLNAME, "scaler", "AIRFLOW_KEDA_SCALER_REFRESH_INTERVAL", False),
        # ... a scaler variable given to the webhook, a flag-derived guess and a typo are not.
        (f"{FULLNAME}-webhook", "webhook", "AIRFLOW_KEDA_SCALER_REFRESH_INTERVAL", True),
        (f"{FULLNAME}-webhook", "webhook", "AIRFLOW_KEDA_SCALER_MAX_BODY_BYTES", True),
        (FULLNAME, "scaler", "AIRFLOW_KEDA_SCALER_REFRESH_INTERVALS", True),
    ],
)
def test_the_check_catches_a_variable_the_program_does_not_read(deployment, key, env, wrong):
    values: dict = {"webhook": {"enabled": True}}
    values.setdefault(key, {})["extraEnv"] = [{"name": env, "value": "1"}]
    c = container(one(render(values), "Deployment", deployment))
    problems = unknown_to(c["args"][0], c)
    assert problems == ([f"`{c['args'][0]}` does not read {env}"] if wrong else [])


def test_the_check_catches_a_flag_the_program_does_not_have():
    values = {"webhook": {"enabled": True, "extraArgs": ["--grpc-addr", "0.0.0.0:1"]}}
    c = container(one(render(values), "Deployment", f"{FULLNAME}-webhook"))
    assert unknown_to("webhook", c) == ["`webhook` has no --grpc-addr"]


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
