# glioma-node: the DICOM node with its default models, on Debian bookworm (Python 3.11).
# Research use only, not for diagnosis.
#
#   docker build -t glioma-node .                       # CPU torch (default)
#   docker build --build-arg VARIANT=cuda -t glioma-node:cuda .   # CUDA torch from PyPI
#
# It runs the same commands as README.md: `make install`, then `glioma-node serve`.
FROM debian:bookworm-slim

ARG VARIANT=cpu
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# dcmtk for the dcmtk tools the docs use (echoscu, storescu); the rest builds pyradiomics.
# Not version-pinned: bookworm's security updates replace the versions a pin would name.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential make \
      dcmtk ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/glioma-node
COPY pyproject.toml README.md Makefile ./
COPY requirements ./requirements
COPY glioma_node ./glioma_node
# GPU=yes lets pip take the CUDA build of torch (the CPU pin is dropped)
RUN if [ "$VARIANT" = "cuda" ]; then make install PYTHON=python3 GPU=yes; else make install PYTHON=python3 GPU=; fi
COPY deploy/docker.yaml /etc/glioma-node/glioma-node.yaml

ENV PATH=/opt/glioma-node/.venv/bin:$PATH
RUN useradd --system --uid 10001 --home-dir /var/lib/glioma-node glioma \
 && mkdir -p /var/lib/glioma-node \
 && chown glioma /var/lib/glioma-node
USER 10001
WORKDIR /var/lib/glioma-node
# the spool, the job database, results and outbox: keep them across container restarts
VOLUME ["/var/lib/glioma-node"]
# DICOM, then /health and /metrics
EXPOSE 11112 11180
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:11180/health', timeout=4)"]
ENTRYPOINT ["glioma-node", "--config", "/etc/glioma-node/glioma-node.yaml"]
CMD ["serve"]
