"""Shared helpers for the chart checks: real Helm (helm-python-sdk embeds Helm v4's Go SDK), the
Kubernetes and KEDA schemas, and a fake API server for `lookup`.

Run through `.ci/chart-check.sh`, which installs the pinned tools.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "airflow-keda-scaler"
EXAMPLES = REPO / "deploy" / "examples"
HERE = Path(__file__).resolve().parent
VALUES_DIR = HERE / "values"
KEDA_CRDS = HERE / "fixtures" / "keda"

RELEASE = "aks"
NAMESPACE = "scaling"
FULLNAME = f"{RELEASE}-airflow-keda-scaler"

# Oldest Kubernetes the chart supports (Chart.yaml kubeVersion; KEDA v2.20's tested floor) and
# the newest kubernetes-validate knows.
KUBE_VERSIONS = ("1.33.0", "1.37.0")

# The values sets every generic check runs on (tests/chart/values/<name>.yaml).
VALUE_SETS = sorted(p.stem for p in VALUES_DIR.glob("*.yaml"))

Manifest = dict[str, Any]


def load_values(name: str) -> dict[str, Any]:
    return yaml.safe_load((VALUES_DIR / f"{name}.yaml").read_text()) or {}


@functools.cache
def _render_cached(values_json: str, namespace: str) -> tuple[tuple[str, str], ...]:
    with helm.Chart.load(CHART) as chart:
        out = chart.render(json.loads(values_json), name=RELEASE, namespace=namespace, is_install=True)
    return tuple(sorted(out.items()))


def render_files(values: dict[str, Any] | None = None, namespace: str = NAMESPACE) -> dict[str, str]:
    """Template path -> rendered text (NOTES.txt included), offline: `lookup` finds nothing."""
    return dict(_render_cached(json.dumps(values or {}, sort_keys=True), namespace))


def parse_manifests(files: dict[str, str]) -> list[Manifest]:
    docs: list[Manifest] = []
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def render(values: dict[str, Any] | None = None, namespace: str = NAMESPACE) -> list[Manifest]:
    return copy.deepcopy(parse_manifests(render_files(values, namespace)))


def notes(values: dict[str, Any] | None = None) -> str:
    return next(v for k, v in render_files(values).items() if k.endswith("NOTES.txt"))


def of_kind(docs: list[Manifest], kind: str) -> list[Manifest]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [d for d in of_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(deployment: Manifest) -> Manifest:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def arg_value(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


# ------------------------------------------------------------------ schemas


@functools.cache
def keda_schema(kind: str) -> dict[str, Any]:
    """openAPIV3Schema of the served version of a KEDA CRD (fixtures/keda, KEDA v2.20.2)."""
    crd_file = {
        "ScaledObject": "keda.sh_scaledobjects.yaml",
        "TriggerAuthentication": "keda.sh_triggerauthentications.yaml",
    }[kind]
    crd = yaml.safe_load((KEDA_CRDS / crd_file).read_text())
    assert crd["spec"]["names"]["kind"] == kind
    (version,) = [v for v in crd["spec"]["versions"] if v["served"] and v["storage"]]
    return version["schema"]["openAPIV3Schema"]


def _strict(schema: Any) -> Any:
    """Structural-schema semantics: an object with `properties` and no
    `additionalProperties` / `x-kubernetes-preserve-unknown-fields` rejects unknown keys (the
    API server prunes them silently, which would hide a typo)."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def validate_keda(doc: Manifest) -> None:
    schema = _strict(keda_schema(doc["kind"]))
    # The API server supplies apiVersion/kind/metadata checks itself.
    jsonschema.Draft7Validator(schema).validate(doc)
    assert doc["apiVersion"] == "keda.sh/v1alpha1"


def validate_kubernetes(doc: Manifest, version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


# Kinds from CRDs we do not vendor: checked for shape in the tests, not against a schema.
UNVENDORED_KINDS = {
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "Certificate"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}


# ------------------------------------------------------------------ fake API server for `lookup`


def airflow_metadata_secret(name: str = "airflow-metadata", key: str = "connection") -> Manifest:
    """The Secret the Apache Airflow chart makes for its metadata database URL."""
    url = base64.b64encode(b"postgresql://airflow:airflow@airflow-postgresql:5432/airflow").decode()
    return {"metadata": {"name": name, "namespace": NAMESPACE}, "type": "Opaque", "data": {key: url}}


class FakeKubeApi:
    """A minimal Kubernetes API server on 127.0.0.1 serving only core/v1 Secrets, enough for
    Helm's `lookup` (discovery of /api/v1, then GET of one Secret). Unknown objects are 404,
    like a real cluster. Requests are recorded."""

    def __init__(self, secrets: list[Manifest], airflow_installed: bool = True):
        """`airflow_installed`: the cluster also holds the Apache Airflow chart's metadata Secret
        (`airflow-metadata`, key `connection`) in the release namespace, as after an Airflow
        install; the chart refuses to install without the Secret it reads the URL from."""
        if airflow_installed:
            secrets = [airflow_metadata_secret(), *secrets]
        self.secrets = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in secrets}
        self.requests: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                api.requests.append(path)
                parts = path.strip("/").split("/")
                if path == "/api":
                    self._send(200, {"kind": "APIVersions", "versions": ["v1"]})
                elif path == "/apis":
                    self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
                elif path == "/api/v1":
                    self._send(
                        200,
                        {
                            "kind": "APIResourceList",
                            "groupVersion": "v1",
                            "resources": [
                                {
                                    "name": "secrets",
                                    "singularName": "secret",
                                    "namespaced": True,
                                    "kind": "Secret",
                                    "verbs": ["get", "list"],
                                }
                            ],
                        },
                    )
                elif len(parts) == 5 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "secrets":
                    items = [
                        {"apiVersion": "v1", "kind": "Secret", **v} for (ns, _), v in api.secrets.items() if ns == parts[3]
                    ]
                    self._send(200, {"apiVersion": "v1", "kind": "SecretList", "metadata": {}, "items": items})
                elif len(parts) == 6 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "secrets":
                    secret = api.secrets.get((parts[3], parts[5]))
                    if secret is not None:
                        self._send(200, {"apiVersion": "v1", "kind": "Secret", **secret})
                    else:
                        self._send(
                            404,
                            {
                                "kind": "Status",
                                "apiVersion": "v1",
                                "status": "Failure",
                                "reason": "NotFound",
                                "code": 404,
                            },
                        )
                else:
                    self._send(
                        404,
                        {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404},
                    )

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeKubeApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def kubeconfig(self) -> str:
        port = self._server.server_address[1]
        return yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "fake",
                "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "fake", "user": {"token": "fake"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": NAMESPACE}}],
            }
        )

    def render(self, values: dict[str, Any]) -> list[Manifest]:
        """Render as `helm upgrade` would: `lookup` reads this fake cluster."""
        with (
            helm.Config(kubeconfig_content=self.kubeconfig, namespace=NAMESPACE) as cfg,
            helm.Chart.load(CHART) as chart,
        ):
            out = cfg.render(chart, values, name=RELEASE, namespace=NAMESPACE, is_upgrade=True)
        return parse_manifests(out)
