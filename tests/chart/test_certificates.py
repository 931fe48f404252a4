"""Chart-generated certificates: valid for the names clients dial, and reused across upgrades.

Reuse is tested with real Helm: `helm_python.Config.render` renders cluster-aware, so the chart's
`lookup` calls go through client-go to a fake API server (conftest.FakeKubeApi) that holds the
Secrets a previous install left behind.
"""

from __future__ import annotations

import base64

from chart_helpers import FULLNAME, NAMESPACE, FakeKubeApi, load_values, of_kind, one, render
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

WEBHOOK_TLS = f"{FULLNAME}-webhook-tls"
CA = f"{FULLNAME}-ca"
# Webhook + scaler mTLS, all in the release namespace.
VALUES = {"webhook": {"enabled": True}, "tls": {"enabled": True}}


def cert(secret, key="tls.crt") -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(secret["data"][key]))


def secrets(docs) -> dict[str, dict]:
    return {s["metadata"]["name"]: s for s in of_kind(docs, "Secret")}


def ca_bundle(docs) -> str:
    return one(docs, "MutatingWebhookConfiguration")["webhooks"][0]["clientConfig"]["caBundle"]


def dns_names(c: x509.Certificate) -> set[str]:
    return set(
        c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    )


def test_generated_leaves_are_signed_by_the_ca_for_the_service_names():
    docs = render(load_values("tls") | VALUES)
    s = secrets(docs)
    ca = cert(s[CA])
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    expected = {
        f"{FULLNAME}-tls": {
            FULLNAME,
            f"{FULLNAME}.{NAMESPACE}",
            f"{FULLNAME}.{NAMESPACE}.svc",
            f"{FULLNAME}.{NAMESPACE}.svc.cluster.local",
        },
        WEBHOOK_TLS: {
            f"{FULLNAME}-webhook",
            f"{FULLNAME}-webhook.{NAMESPACE}",
            f"{FULLNAME}-webhook.{NAMESPACE}.svc",
            f"{FULLNAME}-webhook.{NAMESPACE}.svc.cluster.local",
        },
    }
    for name, names in expected.items():
        leaf = cert(s[name])
        leaf.verify_directly_issued_by(ca)
        assert dns_names(leaf) == names
        assert s[name]["data"]["ca.crt"] == s[CA]["data"]["tls.crt"]
    client = cert(s[f"{FULLNAME}-keda-client"])
    client.verify_directly_issued_by(ca)
    assert ExtendedKeyUsageOID.CLIENT_AUTH in client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    # The host KEDA dials is among the server's names (the Service is in the release namespace,
    # the ScaledObjects in the Airflow one).
    for so in of_kind(docs, "ScaledObject"):
        host = so["spec"]["triggers"][0]["metadata"]["scalerAddress"].rsplit(":", 1)[0]
        assert host in dns_names(cert(s[f"{FULLNAME}-tls"]))


def test_without_a_cluster_every_render_makes_a_new_ca():
    """Offline (`helm template`), `lookup` finds nothing: the reuse below is not an accident."""
    first = FakeKubeApi([])
    with first:
        a = first.render(VALUES)
    with FakeKubeApi([]) as second:
        b = second.render(VALUES)
    assert secrets(a)[CA]["data"] != secrets(b)[CA]["data"]
    assert f"/api/v1/namespaces/{NAMESPACE}/secrets/{CA}" in first.requests


def test_upgrade_reuses_existing_ca_and_certificates():
    with FakeKubeApi([]) as api:
        installed = api.render(VALUES)
    # The cluster now holds what the install created.
    with FakeKubeApi(of_kind(installed, "Secret")) as api:
        upgraded = api.render(VALUES)
        assert f"/api/v1/namespaces/{NAMESPACE}/secrets/{CA}" in api.requests
    before, after = secrets(installed), secrets(upgraded)
    assert set(before) == set(after)
    for name in before:
        assert after[name]["data"] == before[name]["data"], name
    assert ca_bundle(upgraded) == ca_bundle(installed) == before[CA]["data"]["tls.crt"]


def test_upgrade_signs_missing_certificates_with_the_existing_ca():
    """E.g. the webhook is enabled on a later upgrade: new leaf, same CA, same trust."""
    with FakeKubeApi([]) as api:
        installed = api.render({"tls": {"enabled": True}})
    with FakeKubeApi(of_kind(installed, "Secret")) as api:
        upgraded = api.render(VALUES)
    ca_before = secrets(installed)[CA]
    after = secrets(upgraded)
    assert after[CA]["data"] == ca_before["data"]
    cert(after[WEBHOOK_TLS]).verify_directly_issued_by(cert(ca_before))
    assert ca_bundle(upgraded) == ca_before["data"]["tls.crt"]


def test_upgrade_resigns_a_certificate_from_another_ca():
    with FakeKubeApi([]) as api:
        first = api.render(VALUES)
    with FakeKubeApi([]) as api:
        other = api.render(VALUES)
    # CA from the first install, webhook certificate from an unrelated one.
    stale = [secrets(first)[CA], secrets(other)[WEBHOOK_TLS]]
    with FakeKubeApi(stale) as api:
        upgraded = api.render(VALUES)
    webhook = secrets(upgraded)[WEBHOOK_TLS]
    assert webhook["data"]["tls.crt"] != secrets(other)[WEBHOOK_TLS]["data"]["tls.crt"]
    cert(webhook).verify_directly_issued_by(cert(secrets(first)[CA]))


def test_webhook_existing_secret_ca_bundle_read_from_cluster():
    existing = {
        "metadata": {"name": "my-webhook-tls", "namespace": NAMESPACE},
        "type": "kubernetes.io/tls",
        "data": {"ca.crt": "Q0EtUEVN", "tls.crt": "eA==", "tls.key": "eA=="},
    }
    with FakeKubeApi([existing]) as api:
        docs = api.render({"webhook": {"enabled": True, "existingSecret": "my-webhook-tls"}})
    assert of_kind(docs, "Secret") == []
    assert ca_bundle(docs) == "Q0EtUEVN"
