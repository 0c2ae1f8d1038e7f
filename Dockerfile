# glioma-node on Debian bookworm (Python 3.11), CPU torch unless built on a GPU host.
# Research use only, not for diagnosis.
FROM debian:bookworm-slim

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential make \
      dcmtk dcm2niix ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/glioma-node
COPY pyproject.toml README.md Makefile ./
COPY requirements ./requirements
COPY conf ./conf
COPY node ./node
COPY inference ./inference
COPY dicom_io ./dicom_io
COPY training ./training
COPY models ./models
RUN make install PYTHON=python3 && rm -rf /root/.cache/pip

ENV PATH=/opt/glioma-node/.venv/bin:$PATH
RUN useradd --system --home /var/lib/glioma-node glioma && mkdir -p /var/lib/glioma-node && chown glioma /var/lib/glioma-node
USER glioma
WORKDIR /var/lib/glioma-node
ENTRYPOINT ["glioma-node"]
CMD ["--help"]
