# Energy Data Platform: the API (uvicorn app.main:app) and the `energy-platform` CLI in one image.
#   docker build -t energy-platform:latest .
#   docker run --rm -p 8000:8000 energy-platform:latest
# Stage `build` makes the wheel and a virtualenv with its dependencies; `runtime` copies only the venv.

FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what the wheel is built from: pyproject (metadata), README.md (its `readme`) and the package,
# which carries the bundled sample data and the Alembic migrations as package data.
COPY pyproject.toml README.md ./
COPY app/ ./app/

RUN pip wheel --no-cache-dir --no-deps -w /dist . \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir "$(ls /dist/*.whl)[service]"


FROM python:3.11-slim AS runtime

LABEL org.opencontainers.image.title="energy-platform" \
      org.opencontainers.image.description="Medallion data platform for smart-meter, grid and price data: bronze, silver with VEE, gold." \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="MIT"

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home --shell /usr/sbin/nologin app \
    && mkdir -p /data \
    && chown app:app /data

COPY --from=build /opt/venv /opt/venv

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DATA_DIR=/data

WORKDIR /home/app
USER app

# DATA_DIR=/data holds the lake (and the SQLite metadata store when METADATA_DB_URL is unset):
# mount a volume there (docker-compose.yml mounts `lake`), or it is lost with the container.
EXPOSE 8000

# No curl in slim images: ask /health with the standard library. 503 (metadata database down) raises.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=3).status==200 else 1)"]

CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000"]
