# c66-archiver in a container: the daemon by default, `--sync-now` for one pass.
#   docker build -t c66-archiver .
#   docker run -v c66-data:/data -v ./config.toml:/config/config.toml:ro \
#       -e C66_API_TOKEN=... c66-archiver
# The base is an argument so the image also builds on a locally made Debian base
# with python3 and python3-venv (how the tests build it; see the README).
ARG BASE=python:3.12-slim-bookworm

# Build stage: the README's install steps, into a virtual environment.
FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY archiver ./archiver
RUN python3 -m venv /opt/c66-archiver \
    && /opt/c66-archiver/bin/pip install --no-cache-dir --disable-pip-version-check . \
    && /opt/c66-archiver/bin/c66-archiver --version

# Final stage: the same base (the venv points at its python3), the venv, no build files.
FROM ${BASE}
# The age binary: [encryption] runs it in a process of its own, about twice as fast on
# two cores as pyrage in process (the fallback without it).
RUN apt-get update \
    && apt-get install -y --no-install-recommends age \
    && rm -rf /var/lib/apt/lists/*
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
