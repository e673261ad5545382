# tlpipe, CPU image: the project installed from its own files, pinned by requirements.lock.
#   docker build -t tlpipe:cpu .
# Used by prefect.yaml's Docker and Kubernetes CPU deployments (work pools tlpipe-docker, tlpipe-k8s):
# each run clones the repository ($TLPIPE_GIT_URL), pulls the DVC outputs, runs, pushes.
FROM python:3.11-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends git \
 && rm -rf /var/lib/apt/lists/*

ENV DO_NOT_TRACK=1 DVC_NO_ANALYTICS=1 TF_CPP_MIN_LOG_LEVEL=2 PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /opt/tlpipe
COPY pyproject.toml requirements.lock README.md ./
COPY tasks tasks
COPY flows flows
RUN python -m pip install -c requirements.lock ".[deploy,dask]"
# A run's working directory is its git checkout: its tasks/ and flows/ come first on the path.
ENV PYTHONPATH=.
WORKDIR /work
CMD ["tlpipe", "--help"]
