"""benchmarks/operator_scale.py end to end on the session's control plane, bounded: a handful of
MLModels and a short resync interval."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from controlplane.models import mlmodel
from mlmodel_operator.builders import build_children
from mlmodel_operator.settings import OperatorSettings
from support.cluster import Cluster

pytestmark = pytest.mark.cluster


def test_small_run_reports_readiness_requests_and_a_change_free_resync(
    installed_cluster: Cluster, namespace: str, repo_root, tmp_path
):
    # Older Deployments with the operator's labels elsewhere on the cluster, Available before the
    # run starts, as other tests leave them: the run must time only its own (CI once saw the floor
    # measured as -19 s, from such leftovers).
    leftovers = [
        child
        for index in range(6)
        for child in build_children(
            mlmodel(f"leftover-{index}", namespace), OperatorSettings(), servicemonitor_supported=False
        )
        if child["kind"] == "Deployment"
    ]
    installed_cluster.apply(*leftovers)
    installed_cluster.kubectl(
        "wait", "--for=condition=Available", "deployment", "--all", "-n", namespace, "--timeout=60s"
    )
    completed = subprocess.run(
        [
            sys.executable, str(repo_root / "benchmarks/operator_scale.py"),
            "--count", "6", "--namespaces", "2", "--resync", "4", "--timeout", "120",
            "--output-dir", str(tmp_path), "--cluster-dir", str(installed_cluster.directory),
        ],
        env={**os.environ, "MLMODEL_CLUSTER_PORT": str(installed_cluster.port)},
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    (saved,) = tmp_path.glob("*-operator.json")
    result = json.loads(saved.read_text())["result"]
    assert result["mlmodels"] == 6
    # Read from the Ready conditions' lastTransitionTime: whole seconds.
    assert 0 <= result["seconds_until_all_ready"] <= result["seconds_until_operator_quiet"] + 1
    # Who asked the API server for what, with the operator and without it (the floor run).
    assert result["requests_per_model_by_client"]["mlmodel-operator"] >= 3
    assert result["requests_per_model_by_client"]["deployment-controller"] > 0
    assert result["floor_seconds_until_all_available"] >= 0
    assert "mlmodel-operator" not in result["floor_requests_per_model_by_client"]
    assert result["floor_requests_per_model_by_client"]["replicaset-controller"] > 0
    # Each MLModel needs at least its Deployment, its Service and a status write.
    assert result["api_writes_per_mlmodel"] >= 3
    assert result["api_requests_by_kind"]["patch deployments"] >= 6
    assert result["operator_rss_peak_mb"] >= result["operator_rss_idle_mb"] > 20
    assert result["idle_pass_requests"] >= 1  # the pass ran: it listed the MLModels
    assert result["idle_pass_writes"] == 0
    assert result["idle_pass_objects_changed"] == 0
    assert result["idle_pass_objects_checked"] >= 6 * 5  # MLModel, Deployment, Service, RS, pod
    assert "| idle resync pass: writes | 0 |" in completed.stdout
