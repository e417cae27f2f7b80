#!/bin/sh
# Slim an installed virtual environment for the image (Dockerfile's build stage). Each
# step removes only what no command of ours runs; tests/test_docker_image.py imports
# every module of the program, sends an Apprise notification, makes S3 and STS clients
# and runs the demo in the result.
#   1. debug symbols out of the extension modules (cryptography's 14 MB library ships
#      with them; aiohttp's parser is 3 MB for 0.4 MB of code);
#   2. botocore's API models kept for the services the archiver or the AWS credential
#      chain use (S3; STS, SSO, SSO-OIDC and sign-in for assumed roles and SSO
#      logins): 27 MB of models for 400 services shrink to about 2 MB; its endpoint
#      table gzipped (botocore reads `.json.gz` as it reads `.json`: 1.25 -> 0.1 MB),
#      its usage examples (read only to write API documentation) dropped;
#   3. packages nothing we run imports, though a dependency declares them (5 MB):
#      pygments and markdown-it-py (with mdurl) come with rich for syntax highlighting,
#      tracebacks and Markdown, which we never render (structlog is imported without
#      rich, archiver/core/startup.py); PyYAML and Markdown come with Apprise for YAML
#      config files and Markdown bodies, and we give it URLs and plain text;
#   4. Apprise's translations (2 MB: gettext catalogs of its services' descriptions,
#      which only `apprise --details` shows; the .po sources are never read at all)
#      and its Windows icons;
#   5. what only building or type-checking reads: Cython and C sources and headers,
#      .pyi stubs, the test suites some packages ship;
#   6. one CA bundle: certifi's (which requests, for Apprise, and botocore, for S3,
#      use) becomes the system's, which aiohttp (the Cloud 66 API, the downloads)
#      already trusts: one place to add a private CA (update-ca-certificates), and
#      botocore's own copy (used only without certifi) goes;
#   7. bytecode compiled for what runs import, so nothing is compiled at every start
#      (the image runs as a user that cannot write the venv; Apprise loads all its
#      plugins for the first URL: 0.3 CPU-s from bytecode, 1 s from source); not for
#      cffi and pycparser (cryptography loads only cffi's compiled backend) nor
#      pydantic's v1 API. Without the column tables of each instruction
#      (`-X no_debug_ranges`): 0.8 MiB less resident in every process, 8% smaller .pyc
#      files; tracebacks keep their line numbers and lose only the ^^^ under the
#      failing expression (JSON logs, the container's default, never show those).
# $1: the venv; $2: a pip that can uninstall from it (`pip --python`; the venv has none).
# Needs `strip` (binutils) when there are extension modules to strip.
set -eu
venv=$1
pip=$2
site=$(echo "$venv"/lib/python3*/site-packages)

find "$site" -name '*.so' -exec strip --strip-unneeded {} +

if [ -d "$site/botocore/data" ]; then
    for service in "$site"/botocore/data/*/; do
        case $(basename "$service") in
            s3 | sts | sso | sso-oidc | signin) ;;
            *) rm -rf "$service" ;;
        esac
    done
    gzip -9 "$site/botocore/data/endpoints.json"
    find "$site/botocore/data" -name 'examples-1.json' -delete
fi

"$pip" --python "$venv/bin/python" uninstall --yes --quiet --disable-pip-version-check \
    pygments markdown-it-py mdurl pyyaml markdown

if [ -d "$site/apprise" ]; then
    find "$site/apprise/i18n" -type f \( -name '*.po' -o -name '*.pot' -o -name '*.mo' \) \
        -delete
    find "$site/apprise/i18n" -mindepth 1 -type d -empty -delete
    find "$site/apprise/assets" -name '*.ico' -delete
fi

find "$site" -type f \( -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.c' \
    -o -name '*.h' -o -name '*.pyi' \) -delete
rm -rf "$site"/*/tests

system_bundle=/etc/ssl/certs/ca-certificates.crt
if [ -s "$system_bundle" ] && [ -f "$site/certifi/cacert.pem" ]; then
    ln -sf "$system_bundle" "$site/certifi/cacert.pem"
    rm -f "$site/botocore/cacert.pem"
fi

find "$site" -name '__pycache__' -prune -exec rm -rf {} +
"$venv/bin/python" -X no_debug_ranges -m compileall -q -j 0 \
    -x '/site-packages/(cffi|pycparser|pydantic/v1)/' "$site"
