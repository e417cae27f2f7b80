# Shared set-up for scripts/test.sh and scripts/demo.sh (sourced, not run).

bootstrap_venv() {
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[test]'
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
    apt_install curl openssh-server
}
