# One image, two roles: `python -m gateway` (default) or `python -m flusher`.
# Redis and PostgreSQL come from docker-compose.yml (or managed services), not from this image.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    MONOKERA_HOST=0.0.0.0 MONOKERA_PORT=8000

WORKDIR /app
COPY pyproject.toml README.md ./
COPY core ./core
COPY gateway ./gateway
COPY flusher ./flusher
COPY ops ./ops
COPY devstack ./devstack
RUN pip install --no-cache-dir . \
    && useradd --system --no-create-home monokera

USER monokera
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=2s CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"MONOKERA_PORT\"]}/healthz', timeout=1)"
CMD ["python", "-m", "gateway"]
