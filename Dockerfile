# Meridian's binaries on Debian bookworm. Build: docker build -t meridian .
# The build stage needs a Swift 6 toolchain image; the runtime stage only the shared
# libraries RocksDB and zstd need (the Swift runtime is linked statically).
ARG SWIFT_IMAGE=swift:6.1-bookworm
FROM ${SWIFT_IMAGE} AS build
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq librocksdb-dev libzstd-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --static-swift-stdlib -Xswiftc -enforce-exclusivity=unchecked \
      --product meridian-server \
 && swift build -c release --static-swift-stdlib --product meridian \
 && mkdir -p /out && cp .build/release/meridian-server .build/release/meridian /out/

FROM debian:bookworm-slim
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq librocksdb7.8 libzstd1 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
COPY deploy/docker-demo.yaml /etc/meridian/cluster.yaml
VOLUME /data
ENTRYPOINT ["meridian-server", "--config", "/etc/meridian/cluster.yaml", "--data-dir", "/data"]
