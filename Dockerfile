# The SampleDB operator image: `run` (the operator, default), `webhook` (conversion webhook).
#
# Build with `make docker-build` (podman or docker). The base is a build argument; the default
# is built locally from Debian by `make base-images` (hack/base-images.sh), because no registry
# is reachable here. Any Debian-like image with python3 (>= 3.11) and python3-venv works, e.g.
#   --build-arg BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm
#
# Runtime contract: non-root (65532:65532), nothing is written at run time (works with a
# read-only root filesystem), ports 8080 (metrics), 8081 (health), 9443 (webhook).
ARG BASE_IMAGE=localhost/sampledb-base:bookworm

# -- builder: a venv with the operator package and its dependencies --------------------------------
FROM ${BASE_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_NO_INPUT=1 PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/sampledb

# pip reaches PyPI with the base image's CA certificates, or with the build secret `ca-bundle`
# when given (make docker-build passes the host's bundle: needed behind a TLS-inspecting proxy).
# A secret mount is never stored in a layer.
#
# Bytecode is compiled here with unchecked-hash validation: the files never change in the image
# and its root filesystem is read-only, so Python must never need to (re)write a .pyc.
#
# 1. The pinned dependencies, in their own layer: rebuilt only when pyproject.toml or the lock
#    (constraints.txt: every transitive version, from `make lock`) changes.
#    Wheels only, so the build needs no compiler. kubernetes/aio (the client's asyncio variant,
#    a third of the image) goes: nothing imports it (the operator uses the synchronous client,
#    kopf its own).
COPY operator/pyproject.toml operator/constraints.txt /src/operator/
RUN --mount=type=secret,id=ca-bundle,target=/run/secrets/ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
    && python3 -c 'import tomllib, sys; print("\n".join(tomllib.load(sys.stdin.buffer)["project"]["dependencies"]))' \
        </src/operator/pyproject.toml >/src/requirements.txt \
    && /opt/sampledb/bin/pip install --no-compile --only-binary=:all: \
        -c /src/operator/constraints.txt -r /src/requirements.txt \
    && site=$(/opt/sampledb/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))') \
    && rm -rf "$site/kubernetes/aio" \
    && /opt/sampledb/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash "$site"

# 2. Only the package that ships: sampledb_localcluster (the dev/test cluster harness) is not
#    even copied, so the wheel built from operator/ cannot contain it. pip itself goes too.
COPY operator/sampledb_operator /src/operator/sampledb_operator
RUN --mount=type=secret,id=ca-bundle,target=/run/secrets/ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
    && /opt/sampledb/bin/pip install --no-compile --no-deps /src/operator \
    && /opt/sampledb/bin/pip uninstall --yes pip setuptools \
    && site=$(/opt/sampledb/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))') \
    && if ls -d "$site"/sampledb_localcluster* 2>/dev/null; then echo "sampledb_localcluster must not ship" >&2; exit 1; fi \
    && /opt/sampledb/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash "$site/sampledb_operator" \
    && /opt/sampledb/bin/sampledb-operator --help >/dev/null

# -- the image -----------------------------------------------------------------------------------
FROM ${BASE_IMAGE}
# A passwd entry for the numeric user, so libraries that look the user up (getpass) find one.
RUN echo 'nonroot:x:65532:65532:nonroot:/nonexistent:/usr/sbin/nologin' >>/etc/passwd \
    && echo 'nonroot:x:65532:' >>/etc/group
COPY --from=builder /opt/sampledb /opt/sampledb
ENV PATH=/opt/sampledb/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
WORKDIR /
EXPOSE 8080 8081 9443
ENTRYPOINT ["/opt/sampledb/bin/sampledb-operator"]
CMD ["run"]

# Last, so that a new version or revision only changes the image's metadata.
ARG VERSION=0.0.0-dev
ARG REVISION=unknown
ARG SOURCE_URL=https://github.com/sampledb/sampledb-operator
LABEL org.opencontainers.image.title="sampledb-operator" \
      org.opencontainers.image.description="Kubernetes operator (Python, kopf) that runs PostgreSQL through the SampleDB custom resource" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0"
