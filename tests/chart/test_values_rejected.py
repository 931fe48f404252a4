"""Bad values never reach the cluster: values.schema.json refuses what JSON Schema can express;
the chart's validation template refuses the rest (cross-field rules) when Helm renders."""

from __future__ import annotations

import helm_python as helm
import pytest
from chart_helpers import CHART

WQ = {"name": "default", "queues": ["default"]}


def wq(**overrides):
    return {"workerQueues": [{**WQ, **overrides}]}


# (id, values, where the schema error points)
SCHEMA_REJECTS = [
    ("maxTasksPerWorker 0", wq(maxTasksPerWorker=0), "/workerQueues/0/maxTasksPerWorker"),
    ("maxTasksPerWorker not a number", wq(maxTasksPerWorker="16"), "/workerQueues/0/maxTasksPerWorker"),
    ("negative minWorkers", wq(minWorkers=-1), "/workerQueues/0/minWorkers"),
    ("maxWorkers 0", wq(maxWorkers=0), "/workerQueues/0/maxWorkers"),
    (
        "default maxTasksPerWorker 0",
        {"workerQueueDefaults": {"maxTasksPerWorker": 0}},
        "/workerQueueDefaults/maxTasksPerWorker",
    ),
    ("worker queue without name", {"workerQueues": [{"queues": ["default"]}]}, "/workerQueues/0"),
    ("name not a DNS label", wq(name="High_CPU"), "/workerQueues/0/name"),
    ("empty queue list", wq(queues=[]), "/workerQueues/0/queues"),
    ("duplicate Airflow queue", wq(queues=["a", "a"]), "/workerQueues/0/queues"),
    ("unknown worker-queue key", wq(maxTasks=4), "/workerQueues/0"),
    ("no worker queues", {"workerQueues": []}, "/workerQueues"),
    ("unknown top-level key (typo)", {"workerQueus": [WQ]}, "workerQueus"),
    ("bad trigger type", {"scaledObject": {"triggerType": "pull"}}, "/scaledObject/triggerType"),
    ("polling 0", {"scaledObject": {"pollingInterval": 0}}, "/scaledObject/pollingInterval"),
    ("bad failure policy", {"webhook": {"failurePolicy": "Maybe"}}, "/webhook/failurePolicy"),
    ("webhook timeout over 30", {"webhook": {"timeoutSeconds": 31}}, "/webhook/timeoutSeconds"),
    ("bad certificate source", {"certificates": {"source": "vault"}}, "/certificates/source"),
    ("bad duration", {"database": {"timeout": "5 seconds"}}, "/database/timeout"),
    ("zero replicas", {"scaler": {"replicas": 0}}, "/scaler/replicas"),
    ("bad log format", {"logFormat": "xml"}, "/logFormat"),
]

# (id, values, message) refused while rendering.
RENDER_REJECTS = [
    ("minWorkers > maxWorkers", wq(minWorkers=5, maxWorkers=2), "minWorkers (5) is greater than maxWorkers (2)"),
    ("minWorkers > default maxWorkers", wq(minWorkers=11), "minWorkers (11) is greater than maxWorkers (10)"),
    (
        "default minWorkers > maxWorkers",
        {
            "workerQueueDefaults": {
                "minWorkers": 4,
                "maxTasksPerWorker": 16,
                "maxWorkers": 10,
                "targetKind": "StatefulSet",
            },
            "workerQueues": [{**WQ, "maxWorkers": 3}],
        },
        "minWorkers (4)",
    ),
    ("duplicate worker queue", {"workerQueues": [WQ, WQ]}, '"default" is used twice'),
    (
        "existing TLS secret without client secret",
        {"tls": {"enabled": True, "existingSecret": "x"}},
        "also set tls.kedaClientSecret",
    ),
    (
        "webhook limited to its own namespace",
        {"webhook": {"enabled": True, "namespaces": ["scaling"]}},
        "which the webhook always excludes",
    ),
    (
        "cert-manager across namespaces with a namespaced issuer",
        {"tls": {"enabled": True}, "certificates": {"source": "certManager"}, "airflow": {"namespace": "other"}},
        "ClusterIssuer",
    ),
]


@pytest.mark.parametrize("values, where", [c[1:] for c in SCHEMA_REJECTS], ids=[c[0] for c in SCHEMA_REJECTS])
def test_schema_rejects(values, where):
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmValuesError) as err:
            chart.validate_schema(values)
        assert where in str(err.value)
        # And an install (which validates before rendering) refuses them the same way.
        with pytest.raises(helm.HelmValuesError):
            chart.render(values, name="aks", namespace="scaling", is_install=True)


@pytest.mark.parametrize("values, message", [c[1:] for c in RENDER_REJECTS], ids=[c[0] for c in RENDER_REJECTS])
def test_render_rejects(values, message):
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)  # valid JSON, but not a working installation
        with pytest.raises(helm.HelmRenderError) as err:
            chart.render(values, name="aks", namespace="scaling", is_install=True)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "values",
    [
        wq(minWorkers=0, maxWorkers=1),
        wq(minWorkers=10, maxWorkers=10),
        wq(maxTasksPerWorker=1, activationTasks=0, executorNames=["CeleryExecutor"], defaultExecutor=False),
    ],
)
def test_edge_values_accepted(values):
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)
        chart.render(values, name="aks", namespace="scaling", is_install=True)
