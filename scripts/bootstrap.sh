# Shared set-up for scripts/test.sh and scripts/demo.sh (sourced, not run).

bootstrap_venv() {
    # $1: the lock to install, 'requirements.lock' (the program with every extra) or
    # 'requirements-test.lock' (with the test tools); $2: the venv (default .venv).
    # Exactly the locked, hash-checked packages (scripts/lock.sh refreshes them), then
    # this tree, editable, with no dependency of its own and the locked build backend.
    local lock=${1:-requirements.lock} venv=${2:-.venv}
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes \
        --no-deps -r "$lock" -r requirements-build.lock
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
        --no-build-isolation -e .
}

apt_install() {
    # Install Debian packages that are missing; `apt-get update` only when needed.
    local missing=()
    for package in "$@"; do
        dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "missing packages (install them as root): ${missing[*]}" >&2
        return 0
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

bootstrap_test_services() {
    # curl: the benchmark's baseline and a test or two. openssh-server: the SFTP tests' sshd.
    # systemd: systemd-analyze verifies the units. buildah, podman, debootstrap: the image test.
    # restic: the retention tests check our `forget` rules against restic's own. age: the
    # encryption tests decrypt what we store with the age CLI itself.
    # prometheus: promtool and a real Prometheus for the monitoring tests. chromium: the
    # status page loaded in a headless browser.
    apt_install curl openssh-server systemd buildah podman debootstrap restic age prometheus \
        chromium
    bootstrap_image_base
}

# The Docker image test (tests/test_docker_image.py) builds with buildah on a
# Debian base made here: no Docker engine and no registry are reachable on the
# test machines. The debootstrapped base is cached, so re-runs only import it.
# It is slimmed as Debian's own "-slim" images are (no apt lists or package cache,
# no documentation, manual pages or translations, and dpkg told to leave them out of
# packages installed later): 272 MB -> about 125 MB.
IMAGE_BASE=localhost/debian-python-slim:bookworm
IMAGE_BASE_CACHE=/var/cache/c66-archiver-test/debian-python-slim-rootfs.tar

bootstrap_image_base() {
    [ "$(id -u)" = 0 ] || return 0
    command -v podman >/dev/null || return 0
    podman image exists "$IMAGE_BASE" && return 0
    if [ ! -s "$IMAGE_BASE_CACHE" ]; then
        local rootfs
        rootfs=$(mktemp -d)
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            bookworm "$rootfs" >/dev/null
        slim_rootfs "$rootfs"
        mkdir -p "$(dirname "$IMAGE_BASE_CACHE")"
        tar -C "$rootfs" -cf "$IMAGE_BASE_CACHE.tmp" .
        mv "$IMAGE_BASE_CACHE.tmp" "$IMAGE_BASE_CACHE"
        rm -rf "$rootfs"
    fi
    podman import --quiet "$IMAGE_BASE_CACHE" "$IMAGE_BASE" >/dev/null
}

slim_rootfs() {
    # $1: a debootstrapped root. What debuerreotype does for debian:*-slim.
    local root=$1
    cat > "$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'SLIM'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
SLIM
    printf '%s\n' 'Dir::Cache::pkgcache "";' 'Dir::Cache::srcpkgcache "";' \
        'APT::Install-Recommends "false";' > "$root/etc/apt/apt.conf.d/docker-slim"
    find "$root/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
        "$root"/usr/share/lintian "$root"/usr/share/groff/* "$root"/var/lib/apt/lists/* \
        "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
        "$root"/var/cache/debconf/*-old "$root"/var/log/*.log "$root"/var/log/apt/*
}
