#!/usr/bin/env bash
# Sets up (scripts/setup.sh), runs ruff and mypy, then every test of every distribution in this repository.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# lint and type checks first: a lint or type error fails CI before the long test run
.venv/bin/ruff check .
.venv/bin/python -m mypy
exec .venv/bin/python -m pytest "$@"
