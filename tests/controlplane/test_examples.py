"""Each example MLModel, as a user applies it, reaches Ready on the real control plane."""

from __future__ import annotations

import copy

import pytest
import yaml
from support.cluster import REPO_ROOT, Cluster

from controlplane.models import condition

pytestmark = pytest.mark.cluster

EXAMPLES = ["sentiment", "house-prices"]
PRINTER_COLUMNS = ["NAME", "READY", "REASON", "REPLICAS", "MODEL", "URL", "AGE"]


def example(name: str, namespace: str) -> dict:
    body = yaml.safe_load((REPO_ROOT / "examples" / name / "mlmodel.yaml").read_text())
    body = copy.deepcopy(body)
    body["metadata"]["namespace"] = namespace
    # The pods cannot see this disk: in a cluster the artifact is at an https:// place.
    body["spec"]["model"]["uri"] = f"https://models.example.com/{name}/model.joblib"
    return body


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_reaches_ready_and_shows_its_columns(
    installed_cluster: Cluster, run_operator, namespace: str, name: str
):
    run_operator(namespaces=[namespace])
    installed_cluster.apply(example(name, namespace))
    installed_cluster.kubectl(
        "wait", "--for=condition=Ready", f"mlmodel/{name}", "-n", namespace, "--timeout=90s"
    )
    table = installed_cluster.kubectl("get", "mlmodels", "-n", namespace).stdout.splitlines()
    assert table[0].split() == PRINTER_COLUMNS
    row = table[1].split()
    assert row[:3] == [name, "True", "Available"], table
    stored = installed_cluster.get("mlmodel", name, namespace)
    # The Deployment's pods passed the real Pod Security admission (restricted) and run.
    pods = installed_cluster.list("pods", namespace, f"app.kubernetes.io/instance={name}")
    assert pods and all(p["status"]["phase"] == "Running" for p in pods)
    assert stored["status"]["observedGeneration"] == stored["metadata"]["generation"]
    assert condition(stored, "Degraded")["status"] == "False"


def test_kubectl_scale_changes_the_deployment_replicas(
    installed_cluster: Cluster, run_operator, namespace: str
):
    run_operator(namespaces=[namespace])
    installed_cluster.apply(example("house-prices", namespace))
    installed_cluster.kubectl(
        "wait", "--for=condition=Ready", "mlmodel/house-prices", "-n", namespace, "--timeout=90s"
    )
    installed_cluster.kubectl("scale", "mlmodel/house-prices", "-n", namespace, "--replicas=3")
    installed_cluster.kubectl(
        "wait", "--for=jsonpath={.spec.replicas}=3", "deployment/house-prices", "-n", namespace,
        "--timeout=60s",
    )
    installed_cluster.kubectl(
        "wait", "--for=jsonpath={.status.replicas}=3", "mlmodel/house-prices", "-n", namespace,
        "--timeout=60s",
    )
    described = installed_cluster.kubectl("describe", "mlmodel/house-prices", "-n", namespace).stdout
    events = described[described.index("Events:"):]
    assert "ChildCreated" in events and "Ready" in events, described


@pytest.mark.parametrize("overlay", ["staging", "production"])
def test_gitops_overlay_rendered_with_kustomize_reaches_ready(
    installed_cluster: Cluster, run_operator, overlay: str
):
    rendered = installed_cluster.kubectl(
        "kustomize", str(REPO_ROOT / "examples" / "gitops" / "overlays" / overlay)
    ).stdout
    objects = [doc for doc in yaml.safe_load_all(rendered) if doc]
    namespace = next(o["metadata"]["name"] for o in objects if o["kind"] == "Namespace")
    models = [o["metadata"]["name"] for o in objects if o["kind"] == "MLModel"]
    assert models
    run_operator(namespaces=[namespace])
    installed_cluster.kubectl("apply", "-f", "-", input=rendered)
    installed_cluster.kubectl(
        "wait", "--for=condition=Ready", "mlmodel", "--all", "-n", namespace, "--timeout=120s"
    )
    for name in models:
        assert installed_cluster.get("deployment", name, namespace) is not None
