#!/usr/bin/env bash
# Sets up (scripts/setup.sh), runs ruff and mypy, then every test of every distribution in this repository.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# lint and type checks first: a lint or type error fails CI before the long test run
.venv/bin/ruff check .
.venv/bin/python -m mypy
# the plugin distributions (each src/ folder a package root) at mypy's defaults; their old debt is in pyproject.toml
plugin_src=(connectors/*/src solutions/*/src plugins/*/src uplinks/*/src platform/cloud/src)
MYPYPATH="$(IFS=:; echo "${plugin_src[*]}")" .venv/bin/python -m mypy "${plugin_src[@]}"
exec .venv/bin/python -m pytest "$@"
