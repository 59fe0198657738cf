# syntax=docker/dockerfile:1
# mcp-extauthz: `extauthz serve` as a non-root container.
#   docker build -t mcp-extauthz:0.1.0 .
#   docker run --rm -p 9191:9191 -p 9192:9192 -v "$PWD/policy:/etc/extauthz/policy:ro" mcp-extauthz:0.1.0
# Kubernetes probes the admin port (/healthz, /readyz), so the image has no HEALTHCHECK.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: a wheel of this package, installed with its runtime dependencies into a venv --------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY extauthz ./extauthz
# No extras: the demo/test extras (Envoy, pytest) stay out of the image. The MCP SDK is a core
# dependency: the service uses its client for active discovery.
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install /wheels/*.whl \
 && /opt/venv/bin/extauthz --help >/dev/null

# --- runtime -------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ARG UID=10001
RUN groupadd --system --gid ${UID} extauthz \
 && useradd --system --uid ${UID} --gid ${UID} --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin extauthz \
 && mkdir -p /etc/extauthz/policy
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER ${UID}:${UID}
EXPOSE 9191 9192
ENTRYPOINT ["extauthz"]
CMD ["serve", "--policy", "/etc/extauthz/policy"]
