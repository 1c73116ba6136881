# syntax=docker/dockerfile:1
#
# The base of every VocalBridge service image: Python, the locked dependencies, the generated
# gRPC code and the common library, and an unprivileged user. Each service's own Dockerfile
# (services/<svc>/Dockerfile) adds its code on top. Build with the repository root as context:
#
#     docker build -f services/base.Dockerfile -t vocalbridge/service-base:dev .
#     docker build -f services/<svc>/Dockerfile -t vocalbridge/<svc>:dev .
#
# The base image is pinned by digest (deploy/k8s/README.md, "Base images": how it was chosen
# and how tools/k8s/pin-base-images.sh updates it). Every stage starts from it; only the last
# one ships, and it has no compiler, no pip and no package cache.

ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

# ---------------------------------------------------------------------------------------------
# Stage 1: generated code. tools/gen_protos.sh is the one code-generation step (as for `make`),
# run here so the image never depends on a gen/ directory lying around in the checkout.
FROM ${PYTHON_IMAGE} AS protos
WORKDIR /src
COPY requirements.lock ./
# Only the code generator and what it needs, at the versions the lock file pins.
RUN grep -E '^(grpcio|grpcio-tools|protobuf)==' requirements.lock > /tmp/protoc.lock \
 && pip install --no-cache-dir --disable-pip-version-check --no-deps -r /tmp/protoc.lock
COPY tools/gen_protos.sh tools/
COPY protos protos
RUN PYTHON=python tools/gen_protos.sh

# ---------------------------------------------------------------------------------------------
# Stage 2: the dependencies, in a virtual environment that the last stage copies whole.
# The lock file pins every package (with its dependencies), so --no-deps installs exactly it.
# Left out: the Envoy binary (the edge has its own image) and the development tools (code
# generator, tests, linters, type checker, profiler, manifest validator); tools/k8s/runtime-lock.sh
# is the one list, and `pip check` fails the build if anything left out was needed after all.
FROM ${PYTHON_IMAGE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.lock tools/k8s/runtime-lock.sh /tmp/
RUN python -m venv /opt/venv \
 && sh /tmp/runtime-lock.sh /tmp/requirements.lock > /tmp/runtime.lock \
 && /opt/venv/bin/pip install --no-cache-dir --no-deps -r /tmp/runtime.lock \
 # xds-protos carries an old copy of opentelemetry/proto: the pinned package's files win.
 && /opt/venv/bin/pip install --no-cache-dir --no-deps --force-reinstall \
      "$(grep '^opentelemetry-proto==' /tmp/runtime.lock)" \
 && /opt/venv/bin/pip check \
 && /opt/venv/bin/pip uninstall --yes pip

# ---------------------------------------------------------------------------------------------
# Stage 3: the runtime.
FROM ${PYTHON_IMAGE}

# The root filesystem is read-only in Kubernetes: bytecode is compiled at build time (below).
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
COPY --from=protos /src/gen/python gen/python
COPY libs/common/src libs/common/src
# The source roots that `make venv` writes into its .pth file (no build step); each service's
# image puts its own code in /app/service.
ENV PYTHONPATH=/app/gen/python:/app/libs/common/src:/app/service

# A fixed numeric UID, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
# The code stays owned by root, so the service cannot modify it. The image's own pip goes too:
# nothing is installed at run time.
RUN python -m compileall -q /app \
 && python -m pip uninstall --yes --root-user-action=ignore pip setuptools wheel >/dev/null 2>&1 || true \
 && groupadd --system --gid 10001 vocalbridge \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin vocalbridge
USER 10001:10001
