# The project's Python side: the server, the meters, the grid-alert emitter and the operator tools
# (scripts/). Built by scripts/docker-images.sh from a context it prepares (wheels and the few npm
# packages the code reads, and the compiled contracts, made on the build machine: nothing is
# downloaded or compiled here). It runs as a non-root user, takes every setting from the environment
# (no .env inside, so no key either) and keeps its state under /data.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
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
# The contracts come compiled (src/build, staged by the script): deploying needs no compiler, nor Node.js.
RUN python -m common.compiler check && mkdir -p /data && chown smartmeter:smartmeter /data
USER smartmeter
VOLUME /data
EXPOSE 8765 8766
CMD ["python", "-m", "server"]
