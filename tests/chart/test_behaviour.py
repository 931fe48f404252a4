"""What the rendered chart must do, value by value."""

from __future__ import annotations

import base64

import pytest
import yaml
from chart_helpers import FULLNAME, NAMESPACE, RELEASE, arg_value, container, load_values, notes, of_kind, one, render

WEBHOOK = f"{FULLNAME}-webhook"
CONFIG_DIR = "/etc/airflow-keda-scaler"


def worker_queue_file(docs) -> dict:
    cm = one(docs, "ConfigMap", FULLNAME)
    return yaml.safe_load(cm["data"]["worker-queues.yaml"])


def scaled_objects(docs) -> dict[str, dict]:
    return {so["spec"]["triggers"][0]["metadata"]["workerQueue"]: so for so in of_kind(docs, "ScaledObject")}


# ------------------------------------------------------------------ worker queues


@pytest.mark.parametrize(
    "value_set, expected",
    [
        (
            "defaults",
            [
                {"name": "default", "queues": ["default"], "maxTasksPerWorker": 16, "minWorkers": 1, "maxWorkers": 10},
            ],
        ),
        (
            "three-queues",
            [
                {"name": "default", "queues": ["default"], "maxTasksPerWorker": 16, "minWorkers": 1, "maxWorkers": 10},
                {
                    "name": "high-cpu",
                    "queues": ["high_cpu", "etl"],
                    "maxTasksPerWorker": 4,
                    "minWorkers": 0,
                    "maxWorkers": 20,
                    "activationTasks": 1,
                },
                {
                    "name": "gpu",
                    "queues": ["gpu"],
                    "maxTasksPerWorker": 1,
                    "minWorkers": 0,
                    "maxWorkers": 3,
                    "executorNames": ["CeleryExecutor"],
                    "defaultExecutor": False,
                },
            ],
        ),
        (
            "tls",
            [
                {"name": "default", "queues": ["default"], "maxTasksPerWorker": 16, "minWorkers": 1, "maxWorkers": 10},
                {"name": "reports", "queues": ["reports"], "maxTasksPerWorker": 16, "minWorkers": 1, "maxWorkers": 4},
            ],
        ),
        (
            "external-push",
            [
                {"name": "default", "queues": ["default"], "maxTasksPerWorker": 16, "minWorkers": 0, "maxWorkers": 10},
            ],
        ),
    ],
)
def test_worker_queue_file_equals_values(value_set, expected):
    entries = worker_queue_file(render(load_values(value_set)))["workerQueues"]
    without_target = [{k: v for k, v in e.items() if k != "scaleTargetRef"} for e in entries]
    assert without_target == expected


def test_worker_queue_file_names_each_scaled_objects_target(value_set):
    _, values = value_set
    docs = render(values)
    sos = scaled_objects(docs)
    for entry in worker_queue_file(docs)["workerQueues"]:
        target = sos[entry["name"]]["spec"]["scaleTargetRef"]
        assert entry["scaleTargetRef"] == {"kind": target["kind"], "name": target["name"]}


def test_targets_the_scaler_cannot_watch_stay_out_of_the_worker_queue_file():
    values = {"workerQueues": [{"name": "default", "scaleTargetRef": {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "w"}}]}
    docs = render(values)
    (entry,) = worker_queue_file(docs)["workerQueues"]
    assert "scaleTargetRef" not in entry
    assert scaled_objects(docs)["default"]["spec"]["scaleTargetRef"]["kind"] == "Rollout"


def test_one_scaled_object_per_worker_queue_with_matching_min_max(value_set):
    _, values = value_set
    docs = render(values)
    entries = worker_queue_file(docs)["workerQueues"]
    sos = scaled_objects(docs)
    assert sorted(sos) == sorted(e["name"] for e in entries)
    for entry in entries:
        spec = sos[entry["name"]]["spec"]
        assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (entry["minWorkers"], entry["maxWorkers"])
        assert sos[entry["name"]]["metadata"]["name"] == f"{FULLNAME}-{entry['name']}"


@pytest.mark.parametrize(
    "value_set, queue, target",
    [
        ("defaults", "default", {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "airflow-worker"}),
        ("three-queues", "default", {"apiVersion": "apps/v1", "kind": "Deployment", "name": "airflow-worker"}),
        (
            "three-queues",
            "high-cpu",
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "airflow-worker-high-cpu"},
        ),
        ("three-queues", "gpu", {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "gpu-workers"}),
        ("tls", "reports", {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "prod-worker-reports"}),
    ],
)
def test_scale_target_defaults_to_the_airflow_charts_worker(value_set, queue, target):
    assert scaled_objects(render(load_values(value_set)))[queue]["spec"]["scaleTargetRef"] == target


@pytest.mark.parametrize("value_set, namespace", [("defaults", NAMESPACE), ("tls", "airflow-prod")])
def test_scaled_objects_live_with_the_workers(value_set, namespace):
    for so in of_kind(render(load_values(value_set)), "ScaledObject"):
        assert so["metadata"]["namespace"] == namespace


# ------------------------------------------------------------------ triggers


@pytest.mark.parametrize(
    "value_set, trigger_type, polling, cooldown",
    [
        ("defaults", "external", 10, 300),
        ("external-push", "external-push", 30, 120),
    ],
)
def test_trigger(value_set, trigger_type, polling, cooldown):
    for name, so in scaled_objects(render(load_values(value_set))).items():
        spec = so["spec"]
        assert (spec["pollingInterval"], spec["cooldownPeriod"]) == (polling, cooldown)
        (trigger,) = spec["triggers"]
        assert trigger["type"] == trigger_type
        assert trigger["metadata"] == {
            "scalerAddress": f"{FULLNAME}.{NAMESPACE}.svc.cluster.local:9090",
            "workerQueue": name,
        }


def test_trigger_metadata_never_carries_credentials(value_set):
    _, values = value_set
    for so in of_kind(render(values), "ScaledObject"):
        metadata = so["spec"]["triggers"][0]["metadata"]
        assert not [k for k in metadata if k.endswith("FromEnv") or "connection" in k.lower()]


@pytest.mark.parametrize(
    "value_set, behavior",
    [
        (
            "defaults",
            {"scaleUp": {"tolerance": "0"}, "scaleDown": {"tolerance": "0", "stabilizationWindowSeconds": 300}},
        ),
        (
            "external-push",
            {
                "scaleUp": {"tolerance": "0"},
                "scaleDown": {
                    "tolerance": "0",
                    "stabilizationWindowSeconds": 600,
                    "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}],
                },
            },
        ),
        # scaledObject.exactTolerance: false; the 300 s scale-down window stays.
        ("webhook", {"scaleDown": {"stabilizationWindowSeconds": 300}}),
    ],
)
def test_hpa_tolerance_zero(value_set, behavior):
    for so in of_kind(render(load_values(value_set)), "ScaledObject"):
        got = so["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
        assert got == behavior


def test_explicit_tolerance_in_behavior_wins():
    docs = render({"scaledObject": {"behavior": {"scaleDown": {"tolerance": "0.05"}}}})
    (so,) = of_kind(docs, "ScaledObject")
    assert so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == {
        "scaleUp": {"tolerance": "0"},
        "scaleDown": {"tolerance": "0.05", "stabilizationWindowSeconds": 300},
    }


def test_scale_down_stabilization_defaults_to_five_minutes_and_can_change():
    for values, want in [
        ({}, 300),
        ({"scaledObject": {"scaleDownStabilizationSeconds": 60}}, 60),
        ({"scaledObject": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 30}}}}, 30),
        # 0 is a value, not "unset" (sprig's merge took it for empty and put 300 back).
        ({"scaledObject": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}}, 0),
        ({"scaledObject": {"scaleDownStabilizationSeconds": 0}}, 0),
    ]:
        (so,) = of_kind(render(values), "ScaledObject")
        behavior = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        assert behavior["scaleDown"]["stabilizationWindowSeconds"] == want, values


def test_fallback_passed_through():
    (so,) = of_kind(render(load_values("external-push")), "ScaledObject")
    assert so["spec"]["fallback"] == {"failureThreshold": 3, "replicas": 2}


# ------------------------------------------------------------------ scaler Deployment


def test_scaler_args_match_contract():
    args = container(one(render(), "Deployment", FULLNAME))["args"]
    assert args[0] == "serve"
    expected = {
        "--grpc-addr": "0.0.0.0:9090",
        "--admin-addr": "0.0.0.0:9091",
        "--probe-addr": "0.0.0.0:9092",
        "--worker-queues": f"{CONFIG_DIR}/worker-queues.yaml",
        "--refresh-interval": "1s",
        "--max-staleness": "30s",
        "--shutdown-grace": "10s",
        "--log-format": "json",
        "--log": "info",
    }
    assert {flag: arg_value(args, flag) for flag in expected} == expected
    assert not [a for a in args if a.startswith("--tls") or a.startswith("--database")]


def env_of(docs) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(one(docs, "Deployment", FULLNAME))["env"]}


def test_probes_are_native_grpc_on_the_numeric_probe_port(value_set):
    _, values = value_set
    c = container(one(render(values), "Deployment", FULLNAME))
    assert c["livenessProbe"]["grpc"] == {"port": 9092, "service": "liveness"}
    assert c["readinessProbe"]["grpc"] == {"port": 9092, "service": "readiness"}
    assert {p["containerPort"] for p in c["ports"]} == {9090, 9091, 9092}


def test_service_has_numeric_grpc_port_and_is_headless():
    svc = one(render(), "Service", FULLNAME)
    assert svc["spec"]["clusterIP"] == "None"
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert (ports["grpc"]["port"], ports["grpc"]["targetPort"]) == (9090, 9090)
    assert (ports["admin"]["port"], ports["admin"]["targetPort"]) == (9091, 9091)


@pytest.mark.parametrize("value_set, name", [("defaults", FULLNAME), ("webhook", WEBHOOK)])
def test_hardened_pods(value_set, name):
    deployment = one(render(load_values(value_set)), "Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    c = container(deployment)
    assert deployment["spec"]["replicas"] == 2
    # The scaler mounts its token only to watch the workers (scaler.kubernetes.enabled).
    assert pod["automountServiceAccountToken"] is (name == FULLNAME)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    anti = pod["affinity"]["podAntiAffinity"]
    assert anti, "replicas spread over nodes"


def test_service_accounts_do_not_mount_tokens(value_set):
    _, values = value_set
    for sa in of_kind(render(values), "ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False


@pytest.mark.parametrize("value_set", ["defaults", "webhook"])
def test_pod_disruption_budgets_select_their_pods(value_set):
    docs = render(load_values(value_set))
    deployments = of_kind(docs, "Deployment")
    pdbs = of_kind(docs, "PodDisruptionBudget")
    assert len(pdbs) == len(deployments)
    for pdb in pdbs:
        deployment = one(docs, "Deployment", pdb["metadata"]["name"])
        assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
        assert pdb["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize(
    "value_set, env, secret, key",
    [
        ("defaults", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "airflow-metadata", "connection"),
        ("three-queues", "AIRFLOW_KEDA_SCALER_DATABASE_URL", "airflow-db", "url"),
        ("tls", "AIRFLOW_KEDA_SCALER_DATABASE_URL", f"{FULLNAME}-database", "url"),
    ],
)
def test_database_url_comes_from_a_secret(value_set, env, secret, key):
    docs = render(load_values(value_set))
    from_secrets = {k: v for k, v in env_of(docs).items() if isinstance(v, dict)}
    assert from_secrets == {env: {"secretKeyRef": {"name": secret, "key": key}}}
    made = [s for s in of_kind(docs, "Secret") if s["metadata"]["name"] == f"{FULLNAME}-database"]
    if secret == f"{FULLNAME}-database":
        url = load_values(value_set)["database"]["url"]
        assert base64.b64decode(made[0]["data"]["url"]).decode() == url
    else:
        assert made == []


@pytest.mark.parametrize(
    "value_set, expected",
    [
        (
            "defaults",
            {
                "AIRFLOW_KEDA_SCALER_WORKER_QUEUES": f"{CONFIG_DIR}/worker-queues.yaml",
                "AIRFLOW_KEDA_SCALER_DATABASE_TIMEOUT": "5s",
            },
        ),
        (
            "three-queues",
            {
                "AIRFLOW_KEDA_SCALER_WORKER_QUEUES": f"{CONFIG_DIR}/worker-queues.yaml",
                "AIRFLOW_KEDA_SCALER_DATABASE_TIMEOUT": "5s",
                "AIRFLOW_KEDA_SCALER_DATABASE_SCHEMA": "airflow",
                "AIRFLOW_KEDA_SCALER_DATABASE_PASSWORD_FILE": f"{CONFIG_DIR}/database/password",
            },
        ),
    ],
)
def test_database_settings_are_environment_so_exec_sees_them(value_set, expected):
    """`kubectl exec ... airflow-keda-scaler explain` inherits the container's environment."""
    docs = render(load_values(value_set))
    env = {k: v for k, v in env_of(docs).items() if isinstance(v, str) and k not in WORKERS_ENV}
    assert env == expected


# Settings of the workers' side (tested below).
WORKERS_ENV = {
    "AIRFLOW_KEDA_SCALER_KUBERNETES",
    "AIRFLOW_KEDA_SCALER_KUBERNETES_NAMESPACE",
    "AIRFLOW_KEDA_SCALER_POD_DELETION_COST",
    "AIRFLOW_KEDA_SCALER_POD_DELETION_COST_RATE",
    "AIRFLOW_KEDA_SCALER_DRIFT_AFTER",
    "AIRFLOW_KEDA_SCALER_EXACT_TOLERANCE",
    "AIRFLOW_KEDA_SCALER_PARALLELISM_MODE",
    "AIRFLOW_KEDA_SCALER_AIRFLOW_PARALLELISM",
}


def test_workers_settings_are_environment():
    env = env_of(render())
    assert {k: v for k, v in env.items() if k.startswith("AIRFLOW_KEDA_SCALER_") and "DATABASE" not in k} == {
        "AIRFLOW_KEDA_SCALER_WORKER_QUEUES": f"{CONFIG_DIR}/worker-queues.yaml",
        "AIRFLOW_KEDA_SCALER_KUBERNETES": "auto",
        "AIRFLOW_KEDA_SCALER_KUBERNETES_NAMESPACE": NAMESPACE,
        "AIRFLOW_KEDA_SCALER_POD_DELETION_COST": "true",
        "AIRFLOW_KEDA_SCALER_POD_DELETION_COST_RATE": "10",
        "AIRFLOW_KEDA_SCALER_DRIFT_AFTER": "60s",
        "AIRFLOW_KEDA_SCALER_EXACT_TOLERANCE": "true",
        "AIRFLOW_KEDA_SCALER_PARALLELISM_MODE": "max",
        "AIRFLOW_KEDA_SCALER_AIRFLOW_PARALLELISM": "32",
    }
    off = env_of(render({"scaler": {"kubernetes": {"enabled": False}}, "airflow": {"parallelism": 0}}))
    assert off["AIRFLOW_KEDA_SCALER_KUBERNETES"] == "off"
    assert "AIRFLOW_KEDA_SCALER_POD_DELETION_COST" not in off
    assert "AIRFLOW_KEDA_SCALER_AIRFLOW_PARALLELISM" not in off


def rbac_rules(docs) -> list[dict]:
    return one(docs, "Role", f"{FULLNAME}-workers")["rules"]


def test_rbac_is_least_privilege_in_the_airflow_namespace():
    docs = render(load_values("three-queues"))
    role = one(docs, "Role", f"{FULLNAME}-workers")
    binding = one(docs, "RoleBinding", f"{FULLNAME}-workers")
    so_namespace = of_kind(docs, "ScaledObject")[0]["metadata"]["namespace"]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == so_namespace
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]
    by_resource = {(tuple(r["apiGroups"]), tuple(r["resources"])): r for r in rbac_rules(docs)}
    assert set(by_resource) == {
        (("apps",), ("deployments",)),
        (("apps",), ("statefulsets",)),
        (("",), ("pods",)),
        (("autoscaling",), ("horizontalpodautoscalers",)),
    }
    assert by_resource[(("apps",), ("deployments",))]["resourceNames"] == ["airflow-worker", "airflow-worker-high-cpu"]
    assert by_resource[(("apps",), ("statefulsets",))]["resourceNames"] == ["gpu-workers"]
    assert by_resource[(("",), ("pods",))]["verbs"] == ["get", "list", "watch", "patch"]
    for rule in rbac_rules(docs):
        assert set(rule["verbs"]) <= {"get", "list", "watch", "patch"}
        if rule["resources"] != ["pods"]:
            assert set(rule["verbs"]) == {"get", "list", "watch"}
    assert not of_kind(docs, "ClusterRole") and not of_kind(docs, "ClusterRoleBinding")


def test_each_kubernetes_piece_turns_off():
    no_cost = render({"scaler": {"kubernetes": {"podDeletionCost": {"enabled": False}}}})
    assert all("patch" not in r["verbs"] for r in rbac_rules(no_cost))
    # StatefulSet workers (the defaults) are never patched: no patch verb either.
    assert all("patch" not in r["verbs"] for r in rbac_rules(render()))
    deployment = render({"workerQueueDefaults": {"targetKind": "Deployment"}})
    assert any("patch" in r["verbs"] for r in rbac_rules(deployment))
    for values in ({"scaler": {"kubernetes": {"enabled": False}}}, {"scaler": {"kubernetes": {"rbac": False}}}):
        docs = render(values)
        assert not of_kind(docs, "Role") and not of_kind(docs, "RoleBinding")
    off = one(render({"scaler": {"kubernetes": {"enabled": False}}}), "Deployment", FULLNAME)
    assert off["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_password_file_is_mounted():
    docs = render(load_values("three-queues"))
    sources = one(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"]
    assert {
        "secret": {"name": "airflow-db-password", "items": [{"key": "password", "path": "database/password"}]}
    } in sources


def test_worker_queue_change_rolls_the_scaler():
    def checksum(values):
        return one(render(values), "Deployment", FULLNAME)["spec"]["template"]["metadata"]["annotations"][
            "checksum/worker-queues"
        ]

    assert checksum({}) != checksum({"workerQueues": [{"name": "default", "maxWorkers": 11}]})


# ------------------------------------------------------------------ TLS


def test_tls_wiring():
    values = load_values("tls")
    docs = render(values)
    airflow_ns = values["airflow"]["namespace"]
    client_secret = f"{FULLNAME}-keda-client"

    c = container(one(docs, "Deployment", FULLNAME))
    assert {f: arg_value(c["args"], f) for f in ("--tls-cert", "--tls-key", "--tls-client-ca")} == {
        "--tls-cert": f"{CONFIG_DIR}/tls/tls.crt",
        "--tls-key": f"{CONFIG_DIR}/tls/tls.key",
        "--tls-client-ca": f"{CONFIG_DIR}/tls/ca.crt",
    }
    sources = one(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"]
    assert {
        "secret": {
            "name": f"{FULLNAME}-tls",
            "items": [
                {"key": "tls.crt", "path": "tls/tls.crt"},
                {"key": "tls.key", "path": "tls/tls.key"},
                {"key": "ca.crt", "path": "tls/ca.crt"},
            ],
        }
    } in sources
    # Probes stay on the plaintext port even with TLS.
    assert c["readinessProbe"]["grpc"]["port"] == 9092

    auth = one(docs, "TriggerAuthentication")
    assert auth["metadata"]["namespace"] == airflow_ns
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "caCert", "name": client_secret, "key": "ca.crt"},
        {"parameter": "tlsClientCert", "name": client_secret, "key": "tls.crt"},
        {"parameter": "tlsClientKey", "name": client_secret, "key": "tls.key"},
    ]
    secret = one(docs, "Secret", client_secret)
    assert secret["metadata"]["namespace"] == airflow_ns
    assert set(secret["data"]) == {"ca.crt", "tls.crt", "tls.key"}
    for so in of_kind(docs, "ScaledObject"):
        (trigger,) = so["spec"]["triggers"]
        assert trigger["metadata"]["enableTLS"] == "true"
        assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"], "kind": "TriggerAuthentication"}


def test_tls_without_client_certificates():
    docs = render({"tls": {"enabled": True, "mutual": False}})
    assert "--tls-client-ca" not in container(one(docs, "Deployment", FULLNAME))["args"]
    params = [r["parameter"] for r in one(docs, "TriggerAuthentication")["spec"]["secretTargetRef"]]
    assert params == ["caCert"]


def test_tls_with_existing_secrets():
    docs = render({"tls": {"enabled": True, "existingSecret": "my-tls", "kedaClientSecret": "my-keda"}})
    assert of_kind(docs, "Secret") == []
    sources = one(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"]
    assert any(s.get("secret", {}).get("name") == "my-tls" for s in sources)
    assert {r["name"] for r in one(docs, "TriggerAuthentication")["spec"]["secretTargetRef"]} == {"my-keda"}


# ------------------------------------------------------------------ webhook


def test_webhook_off_by_default():
    docs = render()
    assert of_kind(docs, "MutatingWebhookConfiguration") == []
    assert [d["metadata"]["name"] for d in of_kind(docs, "Deployment")] == [FULLNAME]


@pytest.mark.parametrize("value_set", ["webhook", "cert-manager"])
def test_webhook_configuration(value_set):
    values = load_values(value_set)
    docs = render(values)
    mwc = one(docs, "MutatingWebhookConfiguration")
    (hook,) = mwc["webhooks"]
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["sideEffects"] == "None"
    assert hook["timeoutSeconds"] == 5
    assert hook["failurePolicy"] == values["webhook"].get("failurePolicy", "Ignore")
    # Re-run after later webhooks: a container a service mesh adds is then sized and checked.
    assert hook["reinvocationPolicy"] == values["webhook"].get("reinvocationPolicy", "IfNeeded")
    assert hook["clientConfig"]["service"] == {"name": WEBHOOK, "namespace": NAMESPACE, "path": "/mutate", "port": 443}
    assert hook["rules"] == [
        {
            "operations": ["CREATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    assert hook["objectSelector"] == {"matchLabels": {"kubernetes_executor": "True"}}
    exprs = hook["namespaceSelector"]["matchExpressions"]
    assert all(e["key"] == "kubernetes.io/metadata.name" for e in exprs)
    (not_in,) = [e for e in exprs if e["operator"] == "NotIn"]
    assert {NAMESPACE, "kube-system"} <= set(not_in["values"])
    assert set(values["webhook"].get("excludeNamespaces", [])) <= set(not_in["values"])
    only = [e["values"] for e in exprs if e["operator"] == "In"]
    assert only == ([values["webhook"]["namespaces"]] if values["webhook"].get("namespaces") else [])


def test_webhook_deployment_contract():
    docs = render(load_values("webhook"))
    deployment = one(docs, "Deployment", WEBHOOK)
    c = container(deployment)
    expected = {
        "--https-addr": "0.0.0.0:8443",
        "--admin-addr": "0.0.0.0:8080",
        "--tls-cert": f"{CONFIG_DIR}/tls/tls.crt",
        "--tls-key": f"{CONFIG_DIR}/tls/tls.key",
        "--policy": f"{CONFIG_DIR}/policy.yaml",
    }
    assert c["args"][0] == "webhook"
    assert {f: arg_value(c["args"], f) for f in expected} == expected
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": 8080}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8080}
    anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert anti["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] == "kubernetes.io/hostname"
    svc = one(docs, "Service", WEBHOOK)
    assert {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP", "appProtocol": "https"} in svc["spec"][
        "ports"
    ]


@pytest.mark.parametrize("policy", [{}, {"profiles": {"big": {"resources": {"requests": {"cpu": "2"}}}}}])
def test_webhook_policy_configmap_rendered_from_values(policy):
    docs = render({"webhook": {"enabled": True, "policy": policy}})
    rendered = yaml.safe_load(one(docs, "ConfigMap", f"{WEBHOOK}-policy")["data"]["policy.yaml"])
    assert rendered == policy


def test_webhook_generated_ca_bundle_matches_ca_secret():
    docs = render(load_values("webhook"))
    (hook,) = one(docs, "MutatingWebhookConfiguration")["webhooks"]
    ca = one(docs, "Secret", f"{FULLNAME}-ca")["data"]["tls.crt"]
    assert hook["clientConfig"]["caBundle"] == ca
    assert one(docs, "Secret", f"{FULLNAME}-webhook-tls")["data"]["ca.crt"] == ca


def test_cert_manager_issues_everything_and_injects_the_ca():
    docs = render(load_values("cert-manager"))
    assert of_kind(docs, "Secret") == []
    certs = {c["metadata"]["name"]: c for c in of_kind(docs, "Certificate")}
    assert set(certs) == {f"{FULLNAME}-ca", f"{FULLNAME}-tls", f"{FULLNAME}-keda-client", f"{FULLNAME}-webhook-tls"}
    assert certs[f"{FULLNAME}-ca"]["spec"]["isCA"] is True
    for name, cert in certs.items():
        assert cert["spec"]["secretName"] == name
    assert f"{WEBHOOK}.{NAMESPACE}.svc" in certs[f"{FULLNAME}-webhook-tls"]["spec"]["dnsNames"]
    assert f"{FULLNAME}.{NAMESPACE}.svc.cluster.local" in certs[f"{FULLNAME}-tls"]["spec"]["dnsNames"]
    assert "client auth" in certs[f"{FULLNAME}-keda-client"]["spec"]["usages"]
    issuers = {i["metadata"]["name"]: i["spec"] for i in of_kind(docs, "Issuer")}
    assert issuers == {
        f"{FULLNAME}-selfsigned": {"selfSigned": {}},
        f"{FULLNAME}-ca": {"ca": {"secretName": f"{FULLNAME}-ca"}},
    }
    mwc = one(docs, "MutatingWebhookConfiguration")
    assert mwc["metadata"]["annotations"] == {"cert-manager.io/inject-ca-from": f"{NAMESPACE}/{FULLNAME}-webhook-tls"}
    assert "caBundle" not in mwc["webhooks"][0]["clientConfig"]


def test_cert_manager_with_own_issuer():
    docs = render(
        {
            "certificates": {
                "source": "certManager",
                "certManager": {"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}},
            },
            "webhook": {"enabled": True},
        }
    )
    assert of_kind(docs, "Issuer") == []
    (cert,) = of_kind(docs, "Certificate")
    assert cert["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}


# ------------------------------------------------------------------ monitoring, network, notes


def test_service_monitors_and_network_policies():
    docs = render(load_values("webhook"))
    monitors = {m["metadata"]["name"]: m for m in of_kind(docs, "ServiceMonitor")}
    assert set(monitors) == {FULLNAME, WEBHOOK}
    for name, monitor in monitors.items():
        assert monitor["spec"]["endpoints"][0]["port"] == "admin"
        assert monitor["metadata"]["labels"]["release"] == "prometheus"
        svc = one(docs, "Service", name)
        assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(docs, "NetworkPolicy")}
    grpc_rule = policies[FULLNAME]["ingress"][0]
    assert grpc_rule["ports"] == [{"port": 9090, "protocol": "TCP"}]
    assert grpc_rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}}]
    assert policies[FULLNAME]["policyTypes"] == ["Ingress", "Egress"]
    assert policies[WEBHOOK]["egress"] == []


def test_notes_tell_what_was_installed_and_how_to_check():
    text = notes(load_values("three-queues"))
    for needle in (
        f"deployment/{FULLNAME}",
        "get scaledobjects",
        "-- airflow-keda-scaler explain\n",
        f"{FULLNAME}-high-cpu",
        "Deployment/airflow-worker-high-cpu",
        "HPAConfigurableTolerance",
    ):
        assert needle in text
    assert f'release "{RELEASE}"' in text


@pytest.mark.parametrize(
    "values, warned",
    [
        ({"webhook": {"enabled": True}}, True),
        ({"webhook": {"enabled": True}, "airflow": {"namespace": "airflow"}}, False),
        ({}, False),
    ],
)
def test_notes_warn_when_airflow_shares_the_webhooks_namespace(values, warned):
    assert ("are not mutated" in notes(values)) == warned


@pytest.mark.parametrize(
    "values, warned",
    [
        ({"airflow": {"namespace": "airflow"}}, True),
        ({"airflow": {"namespace": "airflow"}, "database": {"existingSecret": {"name": "db"}}}, False),
        ({}, False),
    ],
)
def test_notes_warn_when_the_airflow_secret_is_in_another_namespace(values, warned):
    assert ("Copy the database URL" in notes(values)) == warned


def test_notes_print_the_parallelism_to_set_and_warn_about_a_cap():
    text = notes(load_values("three-queues"))
    # (10 + 20 + 3) max workers × (16 + 4 + 1) tasks per worker.
    assert "set AIRFLOW__CORE__PARALLELISM=693" in text
    # Airflow's default 32 caps `default` (10 × 16) at 2 workers and `high-cpu` (20 × 4) at 8.
    assert "caps worker queue default at 2 of its 10 workers" in text
    assert "caps worker queue high-cpu at 8 of its 20 workers" in text
    assert "gpu at" not in text
    assert "caps worker queue" not in notes({"airflow": {"parallelism": 160}})
    assert "caps worker queue" not in notes({"airflow": {"parallelism": 0}})
    # StatefulSet workers (the defaults) cannot be spared.
    assert "highest ordinal" in notes()
    assert "highest ordinal" not in notes({"workerQueueDefaults": {"targetKind": "Deployment"}})
