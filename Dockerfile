# syntax=docker/dockerfile:1
#
# qonto-exporter container image.
#   docker build -t qonto-exporter .
#   docker run --rm -p 127.0.0.1:10157:10157 qonto-exporter --demo
#
# Build: release build for the build platform's *-unknown-linux-gnu target on Debian 12 (bookworm),
#        `--locked` so Cargo.lock is used as committed. The binary is NOT static: it is dynamically
#        linked against glibc (libc, libm) and libgcc_s (stack unwinding), which is why the runtime
#        image is distroless "cc" and not "static".
# Run:   distroless cc-debian12: glibc, libgcc_s, ca-certificates, tzdata and /etc/passwd; like every
#        distroless "base" image it also carries libssl and openssl, which the binary does not use
#        (TLS is rustls). No shell, no package manager. Runs as the distroless "nonroot" user 65532.
# Pins:  the Rust image by exact version; distroless publishes no version tags, only the floating
#        "nonroot" tag and digests: for a reproducible image, pin it as
#        gcr.io/distroless/cc-debian12:nonroot@sha256:<digest> (docker buildx imagetools inspect).
# Health: the image has no shell, curl or wget, so the binary probes itself:
#        `qonto-exporter healthcheck` asks http://127.0.0.1:10157/-/healthy and exits 0 on a 200.
#        Kubernetes ignores HEALTHCHECK and probes GET /-/healthy and /-/ready itself
#        (deploy/kubernetes/). Override the URL (--url) if you move the port or serve TLS.

ARG RUST_VERSION=1.95.0
# Set both for a release build: docker build --build-arg VERSION=1.2.3 --build-arg REVISION=$(git rev-parse --short=12 HEAD) .
ARG VERSION=dev
ARG REVISION=unknown

FROM rust:${RUST_VERSION}-slim-bookworm AS build
ARG REVISION
WORKDIR /src
COPY . .
# .git is not in the build context: build.rs takes the revision for qonto_exporter_build_info from here.
ENV QONTO_EXPORTER_REVISION=${REVISION}
# The cache mounts only speed up rebuilds; the binary is copied out of the cached target dir.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin qonto-exporter \
    && install -D -m 0755 target/release/qonto-exporter /out/qonto-exporter \
    && install -d -m 0700 /out/var/lib/qonto-exporter

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION
ARG REVISION
LABEL org.opencontainers.image.title="qonto-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Qonto payment links" \
      org.opencontainers.image.source="https://github.com/qonto-exporter/qonto-exporter" \
      org.opencontainers.image.url="https://github.com/qonto-exporter/qonto-exporter" \
      org.opencontainers.image.documentation="https://github.com/qonto-exporter/qonto-exporter/blob/main/README.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/qonto-exporter /qonto-exporter
# State directory for the rotating OAuth refresh token; owned by the runtime user so that a named
# volume mounted here starts with the right owner.
COPY --from=build --chown=65532:65532 /out/var/lib/qonto-exporter /var/lib/qonto-exporter
USER 65532:65532
EXPOSE 10157
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
    CMD ["/qonto-exporter", "healthcheck"]
ENTRYPOINT ["/qonto-exporter"]
