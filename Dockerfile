# commons-session in a container: the embedded SQLite default on a volume, or PostgreSQL and
# Redis by setting COMMONS_SESSION_DATABASE_URL / COMMONS_SESSION_REDIS_URL (deploy/compose.yaml).
# Dependencies come from requirements.lock, by hash, as `make install` does.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    COMMONS_SESSION_DATABASE_URL=sqlite:////data/commons-session.db

WORKDIR /app
COPY requirements.lock ./
RUN python -m venv /app/.venv \
    && /app/.venv/bin/pip install --quiet --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY src ./src
RUN /app/.venv/bin/pip install --quiet --no-deps . \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin commons \
    && mkdir -p /data && chown commons /data
COPY deploy/entrypoint.sh /usr/local/bin/commons-session-entrypoint

# The SQLite file (and its -wal, -shm, .created marker and .lock) lives here; keep it on a volume.
VOLUME ["/data"]
WORKDIR /data
USER commons
ENV PATH=/app/.venv/bin:$PATH
EXPOSE 8000
ENTRYPOINT ["commons-session-entrypoint"]
CMD ["serve"]
