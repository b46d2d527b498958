# syntax=docker/dockerfile:1
# The sandq image: the worker (`sandq worker`) and the gateway (`sandq serve`, its extra included).
#   docker build -t sandq-worker .                         # final stage "worker" (Kubernetes backend)
#   docker build --target worker-gvisor -t sandq-worker:gvisor .   # adds runsc (local gVisor backend)
# Sandbox images (what untrusted code runs in) are built from deploy/sandbox-image/.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: install sandq and its dependencies into a virtualenv ---------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/sandq
WORKDIR /src
# pyproject.toml names README.md as the package's readme: both are needed to build.
COPY pyproject.toml README.md ./
COPY sandq ./sandq
RUN /opt/sandq/bin/pip install ".[gateway]" \
 && /opt/sandq/bin/pip uninstall -y pip setuptools wheel

# ---- runtime base: the venv, a non-root user, nothing else ----------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 sandq \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin sandq
COPY --from=build /opt/sandq /opt/sandq
ENV PATH=/opt/sandq/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
WORKDIR /tmp
EXPOSE 9808 8080
ENTRYPOINT ["sandq"]
CMD ["worker"]

# ---- worker-gvisor: adds runsc for SANDQ_BACKEND=gvisor (docker compose profile
# "gvisor"). runsc needs root and a privileged container: development only. ------
FROM runtime AS worker-gvisor
ARG GVISOR_APT=https://storage.googleapis.com/gvisor/releases
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl gnupg \
 && curl -fsSL https://gvisor.dev/archive.key \
      | gpg --dearmor -o /usr/share/keyrings/gvisor-archive-keyring.gpg \
 && echo "deb [signed-by=/usr/share/keyrings/gvisor-archive-keyring.gpg] ${GVISOR_APT} release main" \
      > /etc/apt/sources.list.d/gvisor.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends runsc \
 && apt-get purge -y --auto-remove curl gnupg \
 && rm -rf /var/lib/apt/lists/*
ENV SANDQ_BACKEND=gvisor \
    SANDQ_RUNSC_PATH=/usr/bin/runsc \
    SANDQ_SANDBOX_PYTHON=/usr/local/bin/python3
USER 0:0

# ---- worker (default target): the production image -----------------------------
FROM runtime AS worker
USER 10001:10001
