#!/usr/bin/env bash
# Try c66-archiver without a Cloud 66 account: a virtual environment, then the demo
# against the embedded simulator. Extra arguments go to `c66-archiver demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
bootstrap_venv requirements.lock
exec .venv/bin/c66-archiver demo "$@"
