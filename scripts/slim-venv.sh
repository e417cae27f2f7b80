#!/bin/sh
# Slim an installed virtual environment for the image (Dockerfile's build stage):
#   1. debug symbols out of the extension modules (cryptography's 14 MB library ships
#      with them; aiohttp's parser is 3 MB for 0.4 MB of code);
#   2. botocore's API models kept for the services the archiver or the AWS credential
#      chain use (S3; STS, SSO, SSO-OIDC and sign-in for assumed roles and SSO
#      logins): 27 MB of models for 400 services shrink to about 2 MB;
#   3. bytecode compiled for what a run imports, so nothing is compiled at every
#      start (the image runs as a user that cannot write the venv); not for pygments,
#      a dependency of rich for syntax highlighting that no command of ours imports.
#      Without the column tables of each instruction (`-X no_debug_ranges`): 0.8 MiB
#      less resident in every process, 8% smaller .pyc files; tracebacks keep their
#      line numbers and lose only the ^^^ under the failing expression (JSON logs, the
#      container's default, never show those).
# $1: the venv. Needs `strip` (binutils) when there are extension modules to strip.
set -eu
venv=$1
site=$(echo "$venv"/lib/python3*/site-packages)
find "$site" -name '*.so' -exec strip --strip-unneeded {} +
if [ -d "$site/botocore/data" ]; then
    for service in "$site"/botocore/data/*/; do
        case $(basename "$service") in
            s3 | sts | sso | sso-oidc | signin) ;;
            *) rm -rf "$service" ;;
        esac
    done
fi
find "$site" -name '__pycache__' -prune -exec rm -rf {} +
"$venv/bin/python" -X no_debug_ranges -m compileall -q -j 0 -x '/pygments/' "$site"
