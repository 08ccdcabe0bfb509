# nvp-adapter as a sidecar image: non-root, read-only root file system, health-checked.
#
#   docker build -t nvp-adapter .
#   docker build --build-arg BASE_IMAGE=python:3.12-slim -t nvp-adapter .
#   docker run --rm --read-only nvp-adapter
#
# BASE_IMAGE is any official Debian-based python image of 3.11 or newer: grpcio's manylinux
# wheels need glibc, and the build relies on the image's python and pip alone.
ARG BASE_IMAGE=python:3.11-slim

# Stage 1: the project's own wheel, from its sources alone, built by the locked setuptools
# (requirements/build.txt) rather than by whatever an isolated build environment would fetch.
FROM ${BASE_IMAGE} AS wheel
WORKDIR /src
COPY requirements/build.txt ./requirements/
RUN python -m pip install --no-cache-dir --require-hashes --only-binary :all: \
        -r requirements/build.txt
COPY pyproject.toml README.md ./
COPY adapter ./adapter
RUN python -m pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

# Stage 2: a virtual environment with exactly the locked dependencies (requirements/runtime.txt,
# every file checked against its hash, nothing resolved here) and the wheel, every module compiled
# now, since nothing may be written at run time. unchecked-hash: the .pyc files are used as they
# are, whatever the sources' timestamps became on the way into the last stage.
FROM ${BASE_IMAGE} AS venv
COPY requirements/runtime.txt /requirements/
COPY --from=wheel /wheels /wheels
RUN python -m venv /opt/nvp-adapter \
    && /opt/nvp-adapter/bin/python -m pip install --no-cache-dir --no-compile --require-hashes \
        --only-binary :all: --no-deps -r /requirements/runtime.txt \
    && /opt/nvp-adapter/bin/python -m pip install --no-cache-dir --no-compile --no-deps \
        /wheels/*.whl \
    && /opt/nvp-adapter/bin/python -m pip check \
    && /opt/nvp-adapter/bin/python -m compileall -q --invalidation-mode unchecked-hash \
        /opt/nvp-adapter/lib

# Stage 3: the runtime, with the environment alone copied in.
FROM ${BASE_IMAGE}
COPY --from=venv /opt/nvp-adapter /opt/nvp-adapter

# The image's defaults, as environment settings (docs/operations.md, Image). They rank above a
# config file, so the image sets only where it listens:
# - the API on loopback: only containers of the same pod reach it (a sidecar), and the adapter
#   refuses a non-loopback address without [server.tls] or server.insecure = true;
# - grpc.health.v1 alone, plaintext, on every interface, for the probes;
# - no upstream URL: the embedded gateway serves until a config names the real gateway, and it is
#   refused on any address but loopback unless upstream.url = "embedded" is set explicitly.
ENV PATH=/opt/nvp-adapter/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NVP_ADAPTER_SERVER_LISTEN=127.0.0.1:50051 \
    NVP_ADAPTER_SERVER_HEALTH_LISTEN=0.0.0.0:50052

# A numeric user that exists nowhere: Kubernetes' runAsNonRoot can check it, and nothing belongs
# to it, so the root file system can be mounted read-only.
USER 10001:10001

# Only the health port: the API listens on loopback, which no published port reaches.
EXPOSE 50052

HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["nvp-adapter", "health"]

# The executable alone is the entry point, so `docker run IMAGE config check` or `... health`
# run the other commands with the same environment; CMD is the default command.
ENTRYPOINT ["nvp-adapter"]
CMD ["serve"]
