# The local chain: Ganache 7.9.2 (the default) or Foundry's Anvil (`anvil` as the command's first
# word), from the project's node_modules copied in by scripts/docker-images.sh. Flags go after the
# image name as with trufflesuite/ganache (run-docker.sh and compose.yaml pass common.devchain's);
# its data lives in /data. A non-root user.
ARG BASE_IMAGE=node:20-bookworm-slim
FROM ${BASE_IMAGE}
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home --shell /usr/sbin/nologin chain \
    && mkdir -p /data && chown chain:chain /data
COPY node_modules /opt/chain/node_modules
COPY chain-entrypoint.sh /usr/local/bin/chain-entrypoint
USER chain
VOLUME /data
EXPOSE 8545
ENTRYPOINT ["/usr/local/bin/chain-entrypoint"]
