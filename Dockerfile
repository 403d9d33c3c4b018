# syntax=docker/dockerfile:1
# One image for every txoutbox process: `docker run IMAGE api|relay|payments|migrate|...`.
# Built by the CDK app (infra/) from the repository root; the .dockerignore keeps the context small.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: the project and its locked dependencies, in /opt/venv --------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_NO_CACHE=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/opt/venv

RUN pip install "uv==0.13.9"

WORKDIR /build

# Dependencies first (this layer is rebuilt only when the lock changes): runtime ones only, no dev or
# bench groups, no extras (the embedded PostgreSQL of `devstack` is for laptops, not for AWS).
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-default-groups --no-install-project

# Then the project itself, installed as a wheel (not editable), so /build is not needed at run time.
COPY README.md ./
COPY src ./src
RUN uv sync --frozen --no-dev --no-default-groups --no-editable

# ---- runtime: Python, the virtualenv, a non-root user; no pip/uv/compilers are needed ------------------
FROM ${PYTHON_IMAGE}

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TXOUTBOX_HOME=/tmp/txoutbox

# The app runs from /opt/venv: the base image's own pip/setuptools/wheel are not needed either.
RUN python -m pip uninstall --yes --quiet pip setuptools wheel \
    && groupadd --system --gid 10001 txoutbox \
    && useradd --system --uid 10001 --gid txoutbox --home-dir /home/txoutbox --create-home \
       --shell /usr/sbin/nologin txoutbox

COPY --from=builder /opt/venv /opt/venv

USER 10001:10001
WORKDIR /home/txoutbox
EXPOSE 8080

ENTRYPOINT ["txoutbox"]
CMD ["api", "--host", "0.0.0.0", "--port", "8080"]
