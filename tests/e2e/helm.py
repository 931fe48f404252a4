"""Real Helm (v4, through helm-python-sdk, the SDK tests/chart uses) for the end-to-end tests.

    python helm.py render    RELEASE NAMESPACE < values.json   -> JSON list of the rendered objects
    python helm.py install   RELEASE NAMESPACE < values.json   -> JSON release summary
    python helm.py upgrade   RELEASE NAMESPACE < values.json   -> JSON release summary
    python helm.py uninstall RELEASE NAMESPACE                 -> JSON uninstall summary

`render` is `helm template` (offline: `lookup` finds nothing). The others act on the cluster of
the kubeconfig in AKS_E2E_KUBECONFIG. Run by tests/e2e with the venv .ci/e2e makes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import helm_python as helm
import yaml

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "airflow-keda-scaler"


def main() -> int:
    action, release, namespace = sys.argv[1], sys.argv[2], sys.argv[3]
    values = json.loads(sys.stdin.read() or "{}") if action != "uninstall" else None
    if action == "render":
        with helm.Chart.load(CHART) as chart:
            files = chart.render(values, name=release, namespace=namespace, is_install=True)
        docs = []
        for path, text in sorted(files.items()):
            if not path.endswith("NOTES.txt"):
                docs.extend(d for d in yaml.safe_load_all(text) if d)
        json.dump(docs, sys.stdout)
        return 0
    config = helm.Config(kubeconfig_path=os.environ["AKS_E2E_KUBECONFIG"], namespace=namespace)
    with config:
        if action == "install":
            out = config.install(str(CHART), release, values, namespace=namespace, timeout=60)
        elif action == "upgrade":
            out = config.upgrade(str(CHART), release, values, namespace=namespace, timeout=60)
        elif action == "uninstall":
            out = config.uninstall(release, timeout=60, wait="watcher")
        else:
            print(f"unknown action {action}", file=sys.stderr)
            return 2
    json.dump(out, sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
