"""Base job templates of tlpipe's work pools (prefect.yaml names the pools).

    python -m flows.pools kubernetes > deploy/kubernetes-job-template.json   # regenerate the file

- process (`tlpipe-process`): Prefect's default process template; the deployment runs in a checkout.
- docker (`tlpipe-docker`): prefect-docker's default template; GPUs are requested per deployment with
  the job variable `container_create_kwargs: {device_requests: [...]}` (docker run --gpus all).
- kubernetes (`tlpipe-k8s`): prefect-kubernetes' default template plus two variables,
  `gpu_limit` (-> `resources.limits["nvidia.com/gpu"]` of the job's container) and `tolerations`
  (-> the pod's tolerations); both absent from the job unless a deployment sets them. The pod runs as
  the images' unprivileged user (securityContext: runAsNonRoot, uid/gid 10001, as in the Dockerfiles).
"""
from __future__ import annotations

import copy
import json
import sys

# The taint GPU node pools carry (GKE, EKS and AKS GPU nodes, the NVIDIA GPU operator).
IMAGE_UID = 10001  # the `tlpipe` user of Dockerfile and Dockerfile.gpu
GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def kubernetes_job_template() -> dict:
    """prefect-kubernetes' default base job template with a GPU limit and tolerations as variables."""
    from prefect_kubernetes.worker import KubernetesWorker

    template = copy.deepcopy(KubernetesWorker.get_default_base_job_template())
    pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "{{ gpu_limit }}"
    pod["tolerations"] = "{{ tolerations }}"
    pod["securityContext"] = {"runAsNonRoot": True, "runAsUser": IMAGE_UID, "runAsGroup": IMAGE_UID,
                              "fsGroup": IMAGE_UID}
    props = template["variables"]["properties"]
    props["gpu_limit"] = {
        "anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}], "default": None, "title": "GPU limit",
        "description": "GPUs for the job's container (resources.limits nvidia.com/gpu). Leave unset for CPU jobs."}
    props["tolerations"] = {
        "anyOf": [{"type": "array", "items": {"type": "object"}}, {"type": "null"}], "default": None,
        "title": "Tolerations", "examples": [GPU_TOLERATIONS],
        "description": "Pod tolerations, e.g. for the nvidia.com/gpu taint of GPU nodes. Unset: none."}
    return template


def main(argv: list[str]) -> int:
    if argv != ["kubernetes"]:
        print("usage: python -m flows.pools kubernetes > deploy/kubernetes-job-template.json", file=sys.stderr)
        return 2
    print(json.dumps(kubernetes_job_template(), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
