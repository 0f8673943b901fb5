"""The Kubernetes route (dagster-k8s): the same asset graph, each step in its own pod on a GPU node.

Not used by this project's tests or deploy/systemd; a starting point for a cluster. It loads
without one (nothing here contacts the API server until a run starts):

    .venv/bin/pip install -e '.[k8s]'
    FOLEY_PROFILE=cpu .venv/bin/dagster definitions validate -f deploy/k8s/definitions.py

What the cluster must provide, named in the executor's config below (docs/scaling.md):
- an image with this checkout installed (`make install`'s .venv), pushed as ``FOLEY_IMAGE``;
- the artifacts folder as a ReadWriteMany volume with working flock (NFSv4, CephFS) mounted at
  the profile's ``paths.artifacts_dir`` in every pod: the claim ``foley-artifacts``;
- the team instance's connection (deploy/dagster.yaml, with ``run_launcher: K8sRunLauncher``)
  in the ConfigMap ``foley-dagster`` and the password in the Secret ``foley-dagster-pg``.
"""

from __future__ import annotations

import os

from dagster import Definitions
from dagster_k8s import k8s_job_executor

from orchestration.definitions import build_definitions

ARTIFACTS = os.environ.get("FOLEY_ARTIFACTS_MOUNT", "/opt/foley-ldm/artifacts")

executor = k8s_job_executor.configured({
    "job_image": os.environ.get("FOLEY_IMAGE", "foley-ldm:latest"),
    "image_pull_policy": "IfNotPresent",
    "env_config_maps": ["foley-dagster"],  # DAGSTER_PG_HOST/PORT/USER/DB, FOLEY_PROFILE
    "env_secrets": ["foley-dagster-pg"],  # DAGSTER_PG_PASSWORD
    "volumes": [{"name": "artifacts", "persistentVolumeClaim": {"claimName": "foley-artifacts"}}],
    "volume_mounts": [{"name": "artifacts", "mountPath": ARTIFACTS}],
    # one GPU per step pod; the instance's `compute` pool (set to the number of GPUs) and this cap
    # keep the training and sampling steps to one per GPU
    "step_k8s_config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": 1}}}},
    "max_concurrent": int(os.environ.get("FOLEY_GPUS", "4")),
    "load_incluster_config": True,
})



def on_kubernetes(foley: Definitions) -> Definitions:
    """The pipeline's definitions (FOLEY_PROFILE) with every job's steps in pods."""
    return Definitions(assets=foley.assets, asset_checks=foley.asset_checks, jobs=foley.jobs,
                       schedules=foley.schedules, sensors=foley.sensors, resources=foley.resources,
                       executor=executor)


defs = on_kubernetes(build_definitions())
