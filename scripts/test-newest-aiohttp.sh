#!/usr/bin/env bash
# The transfer tests (`-m transfer`) on the newest aiohttp that pyproject.toml's cap
# allows, instead of the locked one: run before `scripts/lock.sh --upgrade-package
# aiohttp`, and now and then, to learn whether a new 3.x release changed what
# archiver/receive.py takes over (it then falls back to aiohttp's public path, and
# says so: the first lines below print which path is in use). Its own venv, so the
# locked .venv stays as it is. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
venv=.venv-newest-aiohttp
bootstrap_venv requirements-test.lock "$venv"
cap=$("$venv/bin/python" - <<'PY'
import tomllib
dependencies = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print(next(d for d in dependencies if d.startswith("aiohttp")))
PY
)
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$cap"
"$venv/bin/python" - <<'PY'
import aiohttp
from archiver.receive import library_blocker
print(f"aiohttp {aiohttp.__version__}: body takeover {library_blocker() or 'on'}")
PY
exec "$venv/bin/python" -m pytest -m transfer -p no:cacheprovider "$@"
