#!/usr/bin/env bash
# Refresh the lock: uv.lock (every package, every Python and platform, with hashes) from
# pyproject.toml, then the requirement files pip installs from with --require-hashes:
#   requirements.lock        the program with every extra (the image; scripts/demo.sh)
#   requirements-test.lock   that plus the test tools (scripts/test.sh, CI)
#   requirements-build.lock  the build backend (setuptools), for --no-build-isolation
# `scripts/lock.sh` keeps every pin that still fits pyproject.toml;
# `scripts/lock.sh --upgrade` moves everything to the newest release allowed
# (`--upgrade-package aiohttp` for one). Run the whole suite before committing the result.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/uv ] || bash scripts/test.sh --co -q >/dev/null  # the venv brings uv
# uv does not read pip's configuration: give it the CA bundle pip uses, if there is one.
cert=$(.venv/bin/python -m pip config get global.cert 2>/dev/null || true)
if [ -n "$cert" ] && [ -z "${SSL_CERT_FILE:-}" ]; then export SSL_CERT_FILE="$cert"; fi
uv=.venv/bin/uv
"$uv" lock "$@"
export_lock() {
    "$uv" export --frozen --format requirements-txt --no-emit-project --no-header \
        --no-default-groups "$@"
}
export_lock --extra all -o requirements.lock >/dev/null
export_lock --extra test -o requirements-test.lock >/dev/null
export_lock --only-group build -o requirements-build.lock >/dev/null
echo "lock refreshed: uv.lock, requirements.lock, requirements-test.lock, requirements-build.lock"
