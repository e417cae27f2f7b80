# c66-archiver in a container: the daemon by default, `--sync-now` for one pass.
#   docker build -t c66-archiver .
#   docker run -v c66-data:/data -v ./config.toml:/config/config.toml:ro \
#       -e C66_API_TOKEN=... c66-archiver
# The base is an argument so the image also builds on a locally made Debian base
# with python3 and python3-venv (how the tests build it; see the README).
ARG BASE=python:3.12-slim-bookworm

# Build stage: the locked dependencies (hash-checked), then this tree as a wheel.
FROM ${BASE} AS build
# binutils: `strip`, for the debug symbols some wheels ship (scripts/slim-venv.sh).
# The age package is only fetched here (apt checks it against the signed index), and
# installed in the final stage with dpkg: no apt index, package cache or debconf
# rewrite there (2.3 MB less than `apt-get install`).
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils \
    && mkdir /debs && cd /debs && apt-get download age \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The dependencies first: this layer is reused until the lock changes.
# /opt/build holds pip and the locked build backend; the program's venv gets no pip.
COPY requirements.lock requirements-build.lock ./
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir --disable-pip-version-check \
        --require-hashes --no-deps -r requirements-build.lock \
    && python3 -m venv --without-pip /opt/c66-archiver \
    && /opt/build/bin/pip --python /opt/c66-archiver/bin/python install --no-cache-dir \
        --disable-pip-version-check --no-compile --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY archiver ./archiver
COPY scripts/slim-venv.sh ./
RUN /opt/build/bin/pip wheel --no-cache-dir --disable-pip-version-check --no-deps \
        --no-build-isolation --wheel-dir /tmp/wheels . \
    && /opt/build/bin/pip --python /opt/c66-archiver/bin/python install --no-cache-dir \
        --disable-pip-version-check --no-compile --no-deps /tmp/wheels/*.whl \
    && sh slim-venv.sh /opt/c66-archiver /opt/build/bin/pip \
    && /opt/c66-archiver/bin/c66-archiver --version

# Final stage: the same base (the venv points at its python3), age, the venv, nothing else.
FROM ${BASE}
# The age binary: [encryption] runs it in a process of its own, about twice as fast on
# two cores as pyrage in process (the fallback without it); also opens a .tar.age by hand
# (`age -d -i key.txt < shop.tar.age > shop.tar`). Installed from the package the build
# stage fetched, mounted for this step only (RUN --mount: BuildKit, the default builder
# since Docker 23, or buildah/podman); dpkg knows it, so image scanners see it.
RUN --mount=type=bind,from=build,source=/debs,target=/debs \
    dpkg -i /debs/age_*.deb \
    && rm -f /var/lib/dpkg/status-old \
    && age --version
COPY --from=build /opt/c66-archiver /opt/c66-archiver
# A fixed non-root uid (65532, "nonroot" in distroless) so volume ownership is predictable.
# /data holds the state and a local archive; the config is mounted at /config/config.toml.
RUN groupadd --gid 65532 c66-archiver \
    && useradd --uid 65532 --gid 65532 --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin c66-archiver \
    && mkdir -p /data /config \
    && chown 65532:65532 /data \
    && chmod 0700 /data
ENV PATH=/opt/c66-archiver/bin:$PATH \
    C66_ARCHIVER_CONFIG=/config/config.toml \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /data
VOLUME ["/data"]
USER 65532:65532
# Healthy means "a pass succeeded within [http] max_age", not merely "the process is up".
HEALTHCHECK --interval=1m --timeout=30s --start-period=10m --retries=3 \
    CMD ["c66-archiver", "health"]
ENTRYPOINT ["c66-archiver"]
