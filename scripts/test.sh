#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs every test of every distribution in this repository.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
