#!/usr/bin/env bash
# Checks the Helm chart, deploy/examples and the Dockerfile (tests/chart) with real Helm, the
# Kubernetes schemas and KEDA's CRDs. Needs only python3 (3.11+) and PyPI: the pinned tools go
# into a venv under target/ (gitignored), rebuilt when tests/chart/requirements.txt changes.
# Exits non-zero on any failure; pytest's closing line counts the checks.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/target/chart-venv"
requirements="$repo/tests/chart/requirements.txt"
stamp="$venv/.requirements.sha256"
python="${PYTHON:-python3}"

want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    echo "chart-check: installing pinned tools into $venv"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$requirements"
    echo "$want" > "$stamp"
fi

cd "$repo"
set +e
"$venv/bin/python" -m pytest tests/chart -p no:cacheprovider -q "$@"
status=$?
set -e
if [[ $status -eq 5 ]]; then
    echo "chart-check: no test ran" >&2
    exit 1
fi
exit $status
