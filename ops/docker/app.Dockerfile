# The project's Python side: the server, the meters, the grid-alert emitter and the operator tools
# (scripts/). Built by scripts/docker-images.sh from a context it prepares (wheels and the few npm
# packages the code reads, made on the build machine: nothing is downloaded here). It runs as a
# non-root user, takes every setting from the environment (no .env inside, so no key either) and
# keeps its state under /data.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
# Node.js runs the npm solc compiler once, below (the official python image has none: Debian's).
RUN command -v node >/dev/null 2>&1 \
    || (apt-get update && apt-get install -y --no-install-recommends nodejs && rm -rf /var/lib/apt/lists/*)
RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home --shell /usr/sbin/nologin smartmeter
COPY wheels /tmp/wheels
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels -r /tmp/wheels/requirements.txt \
    && rm -rf /tmp/wheels
COPY node_modules /app/node_modules
COPY src /app
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SMARTMETER_ENV_FILE=/app/no-such.env \
    DATA_DIR=/data \
    DEPLOYMENTS_DIR=/data/deployments \
    BUILD_DIR=/app/build \
    SERVER_HOST=0.0.0.0
# The contracts compiled once here, so that deploying needs no compiler run.
RUN python -c "from common.settings import load_settings; from common.compiler import compile_contract, \
DEMAND_RESPONSE_NAME; s = load_settings(); compile_contract(s); compile_contract(s, DEMAND_RESPONSE_NAME)" \
    && mkdir -p /data && chown smartmeter:smartmeter /data
USER smartmeter
VOLUME /data
EXPOSE 8765 8766
CMD ["python", "-m", "server"]
