# One image, three roles: `python -m gateway` (default), `python -m flusher`, and the one-shot
# `python -m core.migrate`. Redis and PostgreSQL come from docker-compose.yml (or managed
# services), not from this image.
#
# The base is named by tag, not yet by digest (docs/deploy-docker.md says why). To pin it,
# where Docker Hub can be reached: `docker buildx imagetools inspect python:3.12-slim` prints
# the index digest; write FROM python:3.12-slim@sha256:<that digest>.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MONOKERA_HOST=0.0.0.0 MONOKERA_PORT=8000

WORKDIR /app
# The locked dependencies first, in a layer of their own: a change to the code does not
# reinstall them. base.txt is the service alone (no embedded servers, no test tools).
COPY requirements/base.txt requirements/base.txt
RUN pip install --no-cache-dir --require-hashes -r requirements/base.txt \
    && useradd --system --no-create-home monokera \
    && install -d -o monokera /var/lib/monokera/heartbeat

# Then the code, and the project itself without dependencies (setuptools is in base.txt).
COPY pyproject.toml README.md ./
COPY core ./core
COPY gateway ./gateway
COPY flusher ./flusher
COPY ops ./ops
RUN pip install --no-cache-dir --no-deps --no-build-isolation .

USER monokera
EXPOSE 8000
# The gateway's check; docker-compose.yml gives the flusher its own (it serves no HTTP).
HEALTHCHECK --interval=10s --timeout=2s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"MONOKERA_PORT\"]}/healthz', timeout=1)"
CMD ["python", "-m", "gateway"]
