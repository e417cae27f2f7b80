#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine (as root): system packages the
# tests need, a virtual environment, then pytest. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
bootstrap_venv requirements-test.lock
bootstrap_test_services
exec .venv/bin/python -m pytest "$@"
