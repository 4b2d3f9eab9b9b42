# syntax=docker/dockerfile:1
# tablesafe in a container: the same release build as scripts/dist.sh and CI
# (scripts/lib.sh build_release: browser bundle first, then the server with the bundle
# embedded), then a slim runtime image with the binary alone, run as a non-root user.
#
#   docker build -t tablesafe --build-arg TABLESAFE_BUILD_COMMIT=$(git rev-parse --short=12 HEAD) .
#   docker run -d -p 127.0.0.1:3000:3000 -v tablesafe-data:/var/lib/tablesafe tablesafe
#   docker logs CONTAINER | grep 'generated password'     # the first admin password
# compose.yaml runs it with a PostgreSQL history database.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The commit `tablesafe --version` names (.git is not in the build context).
ARG TABLESAFE_BUILD_COMMIT=
# Installs what is missing (wasm32 target, wasm-bindgen-cli, Node.js and wasm-opt,
# brotli) exactly as on a developer's machine, then builds.
RUN bash -c 'source scripts/lib.sh && ensure_build_tools && build_release' \
 && install -m 0755 target/release/tablesafe /usr/local/bin/tablesafe \
 && /usr/local/bin/tablesafe --version

FROM debian:bookworm-slim
# ca-certificates: TLS to databases, S3 and SMTP servers. No shell tools are needed:
# tablesafe speaks to databases itself.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 tablesafe \
 && useradd --system --uid 10001 --gid tablesafe --home-dir /var/lib/tablesafe \
      --no-create-home --shell /usr/sbin/nologin tablesafe \
 && install -d -o tablesafe -g tablesafe -m 0700 /var/lib/tablesafe
COPY --from=build /usr/local/bin/tablesafe /usr/bin/tablesafe
USER tablesafe:tablesafe
WORKDIR /var/lib/tablesafe
# Inside a container the console must listen on every interface to be published
# (-p 127.0.0.1:3000:3000 keeps it on the host's loopback). Settings are TABLESAFE_*
# variables or a TOML file mounted and named by TABLESAFE_CONFIG.
ENV TABLESAFE_LISTEN=0.0.0.0:3000 \
    TABLESAFE_DATA_DIR=/var/lib/tablesafe
VOLUME ["/var/lib/tablesafe"]
EXPOSE 3000
# /healthz with bash alone (the image has no curl): 200 means the server answers.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/3000 && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tablesafe"]
CMD ["serve"]
