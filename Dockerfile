# paperbot's container images for Docker or Buildah. images/build.sh builds
# the same images without a Docker engine; tests/tests/images.rs checks that
# the labels, user, entrypoint and files below match what that script builds.
#
#   docker build --platform linux/amd64 --target paperbot-operator \
#     -t ghcr.io/paperbot/paperbot-operator:0.1.0 \
#     --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg CREATED="$(date -u -d @"$(git log -1 --format=%ct)" +%Y-%m-%dT%H:%M:%SZ)" .
#   docker build --platform linux/amd64 --target bot-runtime \
#     -t ghcr.io/paperbot/bot-runtime:0.1.0 (same build args) .
#
# linux/amd64 only: the binaries are built for x86_64-unknown-linux-musl.
# (With Buildah: `buildah build` takes the same arguments.)

ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN cargo build --locked --profile image --target x86_64-unknown-linux-musl \
      -p paperbot-operator -p bot-runtime --bin paperbot-operator --bin bot-runtime

# What both images share: users, CA certificates, the user, common labels.
FROM scratch AS base
COPY images/rootfs/etc/passwd images/rootfs/etc/group /etc/
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
USER 65532:65532
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z
LABEL org.opencontainers.image.source="https://example.invalid/paperbot" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"

FROM base AS bot-runtime
COPY --from=build /src/target/x86_64-unknown-linux-musl/image/bot-runtime /usr/local/bin/bot-runtime
LABEL org.opencontainers.image.title="bot-runtime" \
      org.opencontainers.image.description="paperbot bot runtime: runs one paper-trading session and serves its status, metrics and ledger API"
ENTRYPOINT ["/usr/local/bin/bot-runtime"]

FROM base AS paperbot-operator
COPY --from=build /src/target/x86_64-unknown-linux-musl/image/paperbot-operator /usr/local/bin/paperbot-operator
LABEL org.opencontainers.image.title="paperbot-operator" \
      org.opencontainers.image.description="paperbot operator: reconciles PaperAccount, StrategyConfig and BotSession resources into bot-runtime pods"
ENTRYPOINT ["/usr/local/bin/paperbot-operator"]
