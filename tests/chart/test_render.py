"""Every values set: Helm lint is clean, values pass values.schema.json, and every rendered
manifest is valid for the oldest and newest supported Kubernetes and for KEDA's CRDs."""

from __future__ import annotations

import helm_python as helm
import pytest
from chart_helpers import CHART, KUBE_VERSIONS, NAMESPACE, UNVENDORED_KINDS, render, validate_keda, validate_kubernetes


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_lint_is_clean(value_set, kube_version):
    _, values = value_set
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{kube_version}")
    assert report["errors"] == []
    assert report["messages"] == []


def test_values_pass_schema(value_set):
    _, values = value_set
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_manifests_valid_for_kubernetes(value_set, kube_version):
    _, values = value_set
    checked = 0
    for doc in render(values):
        if doc["apiVersion"].startswith("keda.sh/") or (doc["apiVersion"], doc["kind"]) in UNVENDORED_KINDS:
            continue
        validate_kubernetes(doc, kube_version)
        checked += 1
    assert checked >= 5


def test_keda_objects_valid_for_keda_crds(value_set):
    _, values = value_set
    keda = [d for d in render(values) if d["apiVersion"].startswith("keda.sh/")]
    assert keda, "every values set makes at least one ScaledObject"
    for doc in keda:
        validate_keda(doc)


def test_only_known_kinds(value_set):
    _, values = value_set
    allowed = {
        ("v1", "ConfigMap"),
        ("v1", "Secret"),
        ("v1", "Service"),
        ("v1", "ServiceAccount"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
        ("apps/v1", "Deployment"),
        ("policy/v1", "PodDisruptionBudget"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
        ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"),
        ("keda.sh/v1alpha1", "ScaledObject"),
        ("keda.sh/v1alpha1", "TriggerAuthentication"),
        *UNVENDORED_KINDS,
    }
    for doc in render(values):
        assert (doc["apiVersion"], doc["kind"]) in allowed


def test_unvendored_crd_objects_have_their_required_fields(value_set):
    """cert-manager and Prometheus Operator CRDs are not vendored: check the fields their
    controllers require, by hand."""
    _, values = value_set
    required = {
        "Issuer": lambda s: ("selfSigned" in s) != ("ca" in s) and s.get("ca", {}).get("secretName", "x"),
        "Certificate": lambda s: (
            s["secretName"] and s["issuerRef"]["name"] and (s.get("dnsNames") or s.get("commonName"))
        ),
        "ServiceMonitor": lambda s: s["selector"]["matchLabels"] and s["endpoints"][0]["port"],
    }
    for doc in render(values):
        if (doc["apiVersion"], doc["kind"]) in UNVENDORED_KINDS:
            assert doc["metadata"]["namespace"]
            assert required[doc["kind"]](doc["spec"]), doc


def test_every_namespaced_object_names_its_namespace(value_set):
    _, values = value_set
    for doc in render(values):
        if doc["kind"] != "MutatingWebhookConfiguration":
            assert doc["metadata"].get("namespace"), f"{doc['kind']}/{doc['metadata']['name']}"
