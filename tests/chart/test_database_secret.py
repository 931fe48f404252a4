"""The Secret holding the database URL must exist: `helm install` against a cluster refuses to
go on without it, naming the Secret and the fix, instead of leaving a pod in
CreateContainerConfigError. Offline rendering (`helm template`) cannot look and does not refuse.
`lookup` goes to a fake API server (chart_helpers.FakeKubeApi)."""

from __future__ import annotations

import helm_python as helm
import pytest
from chart_helpers import FULLNAME, NAMESPACE, FakeKubeApi, airflow_metadata_secret, container, one, render


def scaler_env(docs) -> dict[str, dict]:
    return {e["name"]: e for e in container(one(docs, "Deployment", FULLNAME))["env"]}


def test_airflow_metadata_secret_absent_refuses_install():
    with FakeKubeApi([], airflow_installed=False) as api, pytest.raises(helm.HelmRenderError) as err:
        api.render({})
    message = str(err.value)
    assert f'the database URL Secret "airflow-metadata" (key "connection") does not exist in namespace "{NAMESPACE}"' in message
    assert "install the Apache Airflow chart" in message and "database.existingSecret" in message


def test_airflow_metadata_secret_without_the_key_refuses_install():
    wrong = airflow_metadata_secret(key="url")
    with FakeKubeApi([wrong], airflow_installed=False) as api, pytest.raises(helm.HelmRenderError) as err:
        api.render({})
    assert 'has no key "connection"' in str(err.value)


def test_airflow_metadata_secret_present_installs():
    with FakeKubeApi([]) as api:
        docs = api.render({})
    ref = scaler_env(docs)["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "airflow-metadata", "key": "connection"}


def test_existing_secret_is_checked_instead():
    values = {"database": {"existingSecret": {"name": "scaler-db", "key": "url"}}}
    with FakeKubeApi([], airflow_installed=False) as api, pytest.raises(helm.HelmRenderError) as err:
        api.render(values)
    assert 'Secret "scaler-db" (key "url") does not exist' in str(err.value)
    with FakeKubeApi([airflow_metadata_secret("scaler-db", "url")], airflow_installed=False) as api:
        api.render(values)


def test_url_value_needs_no_existing_secret():
    with FakeKubeApi([], airflow_installed=False) as api:
        api.render({"database": {"url": "postgresql://u:p@db/airflow"}})


def test_offline_rendering_cannot_check_and_does_not_refuse():
    assert scaler_env(render({}))["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
