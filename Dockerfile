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
# Runs as an unprivileged user (uid 10001, no shell login, no sudo) whose home and work dir are the
# only writable places: a run's working directory is its git checkout in /work (tasks/ and flows/ come
# first on the path); caches (pip, DVC, Keras, Prefect) go under its home.
RUN useradd --create-home --home-dir /home/tlpipe --uid 10001 --shell /usr/sbin/nologin tlpipe \
 && mkdir -p /work && chown tlpipe:tlpipe /work
ENV PYTHONPATH=. HOME=/home/tlpipe PREFECT_HOME=/home/tlpipe/.prefect
USER 10001:10001
WORKDIR /work
CMD ["tlpipe", "--help"]
