# syntax=docker/dockerfile:1
# One image for every txoutbox process: `docker run IMAGE api|relay|payments|migrate|...`.
# Built by the CDK app (infra/) from the repository root; the .dockerignore keeps the context small.
#
# BASE_IMAGE is any Debian bookworm root filesystem; Python is Debian's python3 (3.11), installed here, so the
# image does not depend on a python: image. Real builds use the digest-pinned default below (the CDK app
# passes its own pinned value, context `baseImage`); `make image` passes a base made locally by mmdebstrap,
# because no registry can be reached from the build machine. Refresh the digest with
# `docker buildx imagetools inspect docker.io/library/debian:bookworm-slim` (the index digest, multi-arch).
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim@sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251

# ---- python: the base plus Debian's Python and the CA certificates (HTTPS to AWS, the RDS bundle fetch) --
FROM ${BASE_IMAGE} AS python
# No documentation, manual pages or translations from the packages installed here (as in Debian's -slim
# images), and no apt lists or caches left in the layer.
RUN printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' 'path-exclude /usr/share/locale/*' \
        > /etc/dpkg/dpkg.cfg.d/txoutbox-slim \
    && apt-get update --quiet \
    && DEBIAN_FRONTEND=noninteractive apt-get install --yes --quiet --no-install-recommends python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb /var/cache/debconf/*-old

# ---- builder: the project and its locked dependencies, in /opt/venv --------------------------------
FROM python AS builder
RUN apt-get update --quiet \
    && DEBIAN_FRONTEND=noninteractive apt-get install --yes --quiet --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_NO_CACHE=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/opt/venv

# Downloads from PyPI trust the base's CA certificates, or, when the build passes the secret `build-ca` (a
# CA bundle: a TLS-intercepting proxy's, as on the machine that runs `make image`), that bundle instead.
# A secret mount is never stored in a layer, and this stage is not part of the final image anyway.
ENV CA_SECRET=/run/secrets/build-ca

# uv lives in its own throw-away venv (Debian's python3 is externally managed: no system-wide pip).
RUN --mount=type=secret,id=build-ca \
    if [ -s "$CA_SECRET" ]; then export PIP_CERT="$CA_SECRET"; fi \
    && python3 -m venv /opt/uv && /opt/uv/bin/pip install --quiet "uv==0.13.9"

WORKDIR /build

# Dependencies first (this layer is rebuilt only when the lock changes): runtime ones only, no dev or
# bench groups, no extras (the embedded PostgreSQL of `devstack` is for laptops, not for AWS).
COPY pyproject.toml uv.lock ./
RUN --mount=type=secret,id=build-ca \
    if [ -s "$CA_SECRET" ]; then export SSL_CERT_FILE="$CA_SECRET"; fi \
    && /opt/uv/bin/uv sync --frozen --no-dev --no-default-groups --no-install-project

# Then the project itself, installed as a wheel (not editable), so /build is not needed at run time.
COPY README.md ./
COPY src ./src
RUN --mount=type=secret,id=build-ca \
    if [ -s "$CA_SECRET" ]; then export SSL_CERT_FILE="$CA_SECRET"; fi \
    && /opt/uv/bin/uv sync --frozen --no-dev --no-default-groups --no-editable

# ---- runtime: Python, the virtualenv, a non-root user; no pip/uv/compilers are needed ------------------
FROM python

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TXOUTBOX_HOME=/tmp/txoutbox

# /var/lib/txoutbox/rds-ca receives the RDS CA bundle at task start (infra: the `rds-ca` init container);
# it is created here, owned by the app user, because ECS gives a task volume the owner of the image's
# directory at the VOLUME path (root otherwise, and the non-root user could not write it).
RUN groupadd --system --gid 10001 txoutbox \
    && useradd --system --uid 10001 --gid txoutbox --home-dir /home/txoutbox --create-home \
       --shell /usr/sbin/nologin txoutbox \
    && install -d -o 10001 -g 10001 -m 0755 /var/lib/txoutbox/rds-ca

COPY --from=builder /opt/venv /opt/venv

VOLUME ["/var/lib/txoutbox/rds-ca"]
USER 10001:10001
WORKDIR /home/txoutbox
EXPOSE 8080

ENTRYPOINT ["txoutbox"]
CMD ["api", "--host", "0.0.0.0", "--port", "8080"]
