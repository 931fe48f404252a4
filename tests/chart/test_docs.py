"""The chart README documents every value; docs/helm.md's quick start uses the chart."""

from __future__ import annotations

import re

import yaml
from chart_helpers import CHART, REPO, render

README = (CHART / "README.md").read_text()
DOCUMENTED = set(re.findall(r"^\| `([^`]+)` \|", README, re.M))


def leaf_paths(value, path=()):
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            yield from leaf_paths(sub, path + (key,))
    else:
        yield path


def test_every_value_is_in_the_readme_table():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = []
    for path in leaf_paths(values):
        # A leaf counts as documented by itself or by a documented object above it (such as
        # `scaler.resources`), but not by a whole section (`scaler`).
        prefixes = {".".join(path[:i]) for i in range(min(2, len(path)), len(path) + 1)}
        if not prefixes & DOCUMENTED:
            missing.append(".".join(path))
    assert missing == []


def test_readme_documents_no_value_that_does_not_exist():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for key in DOCUMENTED:
        node = values
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, key
            node = node[part]


def test_readme_defaults_match_values_yaml():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for key, default in re.findall(r"^\| `([^`]+)` \| `([^`]*)` \|", README, re.M):
        node = values
        for part in key.split("."):
            node = node[part]
        assert yaml.safe_load(default.replace("\\|", "|")) == node, key


def test_schema_covers_every_value():
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for key in values:
        assert key in schema["properties"], key


def test_helm_quick_start_uses_the_chart():
    text = (REPO / "docs" / "helm.md").read_text()
    assert "helm install" in text and "deploy/helm/airflow-keda-scaler" in text
    assert "workerQueues" in text


def test_values_table_rows_have_three_non_empty_cells():
    # A row written `| key | default || text |` renders with an empty description cell and
    # the text in a fourth column that the header does not have.
    rows = [line for line in README.splitlines() if re.match(r"^\| `[^`]+` \|", line)]
    assert rows
    broken = []
    for row in rows:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", row.strip())[1:-1]]
        if len(cells) != 3 or not all(cells):
            broken.append(row[:80])
    assert broken == []


def test_helm_quick_start_values_render_the_worker_sets_it_names():
    text = (REPO / "docs" / "helm.md").read_text()
    block = re.search(r"```yaml\n(# scaler-values\.yaml\n.*?)```", text, re.S)
    assert block, "docs/helm.md has no scaler-values.yaml block"
    docs = render(yaml.safe_load(block.group(1)))
    targets = sorted(d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "ScaledObject")
    assert targets == ["airflow-worker", "airflow-worker-high-cpu"]
    # The Airflow chart's values shown next to it keep that chart's own KEDA object off.
    airflow = re.search(r"```yaml\n(# airflow-values\.yaml.*?)```", text, re.S)
    assert airflow and yaml.safe_load(airflow.group(1))["workers"]["celery"]["keda"] == {"enabled": False}
