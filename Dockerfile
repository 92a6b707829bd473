# syntax=docker/dockerfile:1
# absorb-bridge: build a wheel with every optional sink (extras `all`) into a virtual
# environment, then copy only that environment into a clean, non-root runtime image.
#   docker build -t absorb-bridge .
#   docker run --rm -v "$PWD/config.yaml:/etc/absorb-bridge/config.yaml:ro" absorb-bridge

FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
RUN python -m venv /opt/venv

COPY pyproject.toml README.md ./
COPY bridge ./bridge

# The wheel's file name carries the version from pyproject.toml, so nothing is pinned twice.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && wheel="$(find /wheels -name 'absorb_bridge-*.whl')" \
    && /opt/venv/bin/pip install "absorb-bridge[all] @ file://${wheel}"


FROM python:3.11-slim

# docker build --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="absorb-bridge" \
      org.opencontainers.image.description="Change detection for Absorb LMS enrollments, delivered as CloudEvents." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

RUN groupadd --system --gid 10001 absorb-bridge \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin absorb-bridge

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    ABSORB_BRIDGE_CONFIG=/etc/absorb-bridge/config.yaml \
    PYTHONUNBUFFERED=1

# A file sink with a relative path writes here, so the bridge's user owns it.
WORKDIR /app
RUN chown 10001:10001 /app

# Numeric, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001

EXPOSE 9464

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4)"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["absorb-bridge"]
CMD ["run"]
