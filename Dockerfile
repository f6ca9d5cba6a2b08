# depwatch: multi-stage build. The build stage compiles the crate with cargo
# (dependencies first, in their own layer, so that a source change does not
# rebuild them); the runtime image is distroless (glibc, CA certificates,
# no shell), runs as the unprivileged `nonroot` user (65532), and carries a
# static busybox `wget` for the container healthcheck.
#
#   docker build -t depwatch .            (or: docker compose build)
#   docker run --rm -p 127.0.0.1:9877:9877 -v ./depwatch.yml:/etc/depwatch/depwatch.yml:ro depwatch

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# No .git in the build context: the revision comes in as a build argument.
ARG DEPWATCH_REVISION=unknown
ENV DEPWATCH_REVISION=${DEPWATCH_REVISION}
COPY Cargo.toml Cargo.lock build.rs ./
# The order of the default run's functions in the binary (build.rs, scripts/order-functions).
COPY link ./link
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && cargo build --release --locked \
 && rm -rf src target/release/deps/depwatch-* target/release/.fingerprint/depwatch-*
COPY src ./src
RUN cargo build --release --locked \
 && install -D -m 0755 target/release/depwatch /out/usr/local/bin/depwatch \
 && mkdir -p /out/var/lib/depwatch /out/etc/depwatch

FROM busybox:1.36-musl AS busybox

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/usr/local/bin/depwatch /usr/local/bin/depwatch
# The state directory belongs to the runtime user, so that a fresh named
# volume mounted there is writable.
COPY --from=build --chown=65532:65532 /out/var/lib/depwatch /var/lib/depwatch
COPY --from=build /out/etc/depwatch /etc/depwatch
COPY --from=busybox /bin/busybox /bin/wget
USER 65532:65532
WORKDIR /var/lib/depwatch
ENV DEPWATCH_CONFIG=/etc/depwatch/depwatch.yml
EXPOSE 9877
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/bin/wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9877/healthz"]
ENTRYPOINT ["/usr/local/bin/depwatch"]
CMD ["--log-format", "json"]
