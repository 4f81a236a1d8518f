# promlink container image.
#
#   docker build -t <registry>/promlink:0.1.0 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" .
#
# Base images. The defaults are tags, which move: for a reproducible, reviewable build pin both by
# digest and pass them as build arguments, e.g.
#   docker buildx imagetools inspect rust:1.89-bookworm                 (the "Digest:" line)
#   docker buildx imagetools inspect gcr.io/distroless/cc-debian12:nonroot
#   docker build --build-arg RUST_IMAGE=rust:1.89-bookworm@sha256:<digest> \
#                --build-arg RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot@sha256:<digest> ...
# (a digest is per platform list: pin the index digest `imagetools inspect` prints first). Renovate
# or Dependabot can keep pinned digests current. The Helm chart's image.digest then pins the
# resulting image in the cluster.
# rust:1.89 is the crate's rust-version (Cargo.toml); any later 1.x builds it too. Bookworm has
# the same glibc as the distroless runtime.
ARG RUST_IMAGE=rust:1.89-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_TERM_COLOR=never

# 1. Dependencies, in a layer of their own: it is rebuilt only when Cargo.toml, Cargo.lock,
#    build.rs or proto/ change, not on every source change. The only network use of the whole
#    build is `cargo fetch` from crates.io here (Cargo.lock honoured); protobuf code is generated
#    by build.rs with protox, so no protoc is needed. Stub targets stand in for the sources
#    (Cargo.toml declares its benches explicitly, so their files must exist for the manifest to
#    load); their build outputs are removed so the real sources are compiled below.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && echo 'fn main() {}' > benches/relay.rs \
 && echo 'fn main() {}' > benches/criterion_stages.rs \
 && cargo fetch --locked \
 && cargo build --release --locked --offline --bin promlink \
 && rm -rf src benches \
      target/release/promlink* target/release/deps/promlink-* target/release/deps/libpromlink-* \
      target/release/.fingerprint/promlink-* target/release/build/promlink-*

# 2. The sources, built offline against the dependency layer.
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --offline --bin promlink \
 && cp target/release/promlink /promlink \
 && /promlink --version

# Runtime: distroless "cc" (glibc, libgcc, CA certificates, tzdata), no shell, no package manager,
# running as the image's `nonroot` user (65532:65532). Works with readOnlyRootFilesystem: promlink
# writes only to --queue-dir (mount a volume there), never to the root filesystem.
FROM ${RUNTIME_IMAGE}
ARG RUNTIME_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
# OCI image annotations (https://github.com/opencontainers/image-spec/blob/main/annotations.md).
LABEL org.opencontainers.image.title="promlink" \
      org.opencontainers.image.description="Prometheus remote-write forwarder to Azure Monitor managed Prometheus over Private Link" \
      org.opencontainers.image.source="https://github.com/promlink/promlink" \
      org.opencontainers.image.documentation="https://github.com/promlink/promlink/blob/main/docs/deployment.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="${RUNTIME_IMAGE}"
COPY --from=build /promlink /promlink
USER 65532:65532
# Remote write, /health, /ready, /status and /metrics (LISTENING_PORT / --listen).
EXPOSE 8081
# No HEALTHCHECK: there is no shell or curl in the image; Kubernetes probes /health and /ready.
ENTRYPOINT ["/promlink"]
CMD ["serve"]
