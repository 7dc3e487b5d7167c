"""pvc:// and oci:// models on the real control plane: the CRD's rule as the API server runs it, the
Deployment and its pods stored with the volume (Pod Security `restricted` enforced on the pods),
a missing claim reported as ClaimNotFound from the scheduler's own words, and the examples that
`mlmodel render` prints accepted by the server."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from mlmodel_spec.model_uris import MODEL_MOUNT_DIR
from support.cluster import REPO_ROOT, Cluster, KubectlError
from support.crd import BAD_VOLUME_URIS, VOLUME_URIS
from support.ports import wait_until

from controlplane.models import SHA256, condition, mlmodel
from controlplane.pods import wait_for_pods

pytestmark = pytest.mark.cluster
FAST_DIAGNOSIS = {"MLMODEL_OPERATOR_POD_DIAGNOSIS_INTERVAL_SECONDS": "0.5"}
EXAMPLES = REPO_ROOT / "examples" / "sentiment" / "volumes"
CLAIM = "models"


def dry_run(cluster: Cluster, *objects: dict) -> str:
    return cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(list(objects))
    ).stdout


def test_the_api_server_accepts_volume_uris_and_refuses_their_near_misses(
    installed_cluster: Cluster,
):
    for case, uri in VOLUME_URIS.items():
        body = mlmodel(case, "default", model={"uri": uri, "sha256": SHA256})
        assert "created (server dry run)" in dry_run(installed_cluster, body), case
    for case, uri in BAD_VOLUME_URIS.items():
        body = mlmodel(case, "default", model={"uri": uri, "sha256": SHA256})
        with pytest.raises(KubectlError) as refused:
            dry_run(installed_cluster, body)
        assert "pvc://CLAIM/PATH or oci://REGISTRY/REPO:TAG[#PATH]" in str(refused.value), case


@pytest.fixture()
def claim(installed_cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[list[dict]]:
    """A PersistentVolume reserved for the claim `models` of the test's namespace, and that claim:
    apply them (the PV controller binds them), the fixture deletes the cluster-scoped PV after."""
    volume = f"models-{namespace}"
    objects = [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadOnlyMany"],
                "storageClassName": "",
                "hostPath": {"path": str(tmp_path / "models"), "type": "DirectoryOrCreate"},
                "claimRef": {"namespace": namespace, "name": CLAIM},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": CLAIM, "namespace": namespace},
            "spec": {
                "accessModes": ["ReadOnlyMany"],
                "storageClassName": "",
                "volumeName": volume,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    ]
    yield objects
    installed_cluster.kubectl(
        "delete", "pvc", CLAIM, "-n", namespace, "--ignore-not-found", "--wait=false"
    )
    installed_cluster.kubectl("delete", "pv", volume, "--ignore-not-found", "--wait=false")


def _model_volume(pod_spec: dict) -> dict:
    [volume] = [v for v in pod_spec["volumes"] if v["name"] == "model"]
    [mount] = [m for m in pod_spec["containers"][0]["volumeMounts"] if m["name"] == "model"]
    assert mount == {"name": "model", "mountPath": MODEL_MOUNT_DIR, "readOnly": True}
    return volume


def test_a_missing_claim_is_reported_then_the_model_serves_once_it_exists(
    installed_cluster: Cluster, run_operator, namespace: str, claim: list[dict]
):
    cluster = installed_cluster
    run_operator(namespaces=[namespace], **FAST_DIAGNOSIS)
    cluster.apply(
        mlmodel(
            "sentiment",
            namespace,
            model={"uri": f"pvc://{CLAIM}/sentiment/model.joblib", "sha256": SHA256},
        )
    )
    degraded = wait_until(
        lambda: (
            (d := condition(cluster.get("mlmodel", "sentiment", namespace), "Degraded")).get(
                "status"
            )
            == "True"
            and d
        ),
        timeout=60,
        what="Degraded for the missing claim",
    )
    assert degraded["reason"] == "ClaimNotFound", degraded
    assert degraded["message"].startswith(
        f"PersistentVolumeClaim {CLAIM} named by spec.model.uri does not exist in namespace {namespace}"
    )
    # The scheduler's words, quoted: what tests/operator/test_model_sources.py parses.
    assert f'persistentvolumeclaim "{CLAIM}" not found' in degraded["message"]
    stored = cluster.get("mlmodel", "sentiment", namespace)
    assert condition(stored, "Ready")["status"] == "False"
    assert stored["status"]["lastFailure"]["reason"] == "ClaimNotFound"

    # The claim appears and is bound: the scheduler places the waiting pod, no operator action.
    cluster.apply(*claim)
    cluster.kubectl(
        "wait", "--for=condition=Ready", "mlmodel/sentiment", "-n", namespace, "--timeout=90s"
    )
    assert (
        condition(cluster.get("mlmodel", "sentiment", namespace), "Degraded")["status"] == "False"
    )
    deployment = cluster.get("deployment", "sentiment", namespace)
    assert _model_volume(deployment["spec"]["template"]["spec"]) == {
        "name": "model",
        "persistentVolumeClaim": {"claimName": CLAIM, "readOnly": True},
    }
    [pod] = wait_for_pods(cluster, namespace, "sentiment")
    assert _model_volume(pod["spec"])["persistentVolumeClaim"]["claimName"] == CLAIM


def test_an_image_model_is_stored_with_its_image_volume_and_serves(
    installed_cluster: Cluster, run_operator, namespace: str
):
    """Kubernetes 1.36 keeps image volumes (the ImageVolume gate is GA, locked on); the pods pass
    the restricted Pod Security Standard with one, and KWOK's node runs them."""
    cluster = installed_cluster
    run_operator(namespaces=[namespace], **FAST_DIAGNOSIS)
    uri = "oci://registry.example.com/models/sentiment:1.0.0#sentiment/model.joblib"
    cluster.apply(mlmodel("sentiment", namespace, model={"uri": uri, "sha256": SHA256}))
    cluster.kubectl(
        "wait", "--for=condition=Ready", "mlmodel/sentiment", "-n", namespace, "--timeout=90s"
    )
    deployment = cluster.get("deployment", "sentiment", namespace)
    expected = {
        "name": "model",
        "image": {
            "reference": "registry.example.com/models/sentiment:1.0.0",
            "pullPolicy": "IfNotPresent",
        },
    }
    assert _model_volume(deployment["spec"]["template"]["spec"]) == expected
    [pod] = wait_for_pods(cluster, namespace, "sentiment")
    assert _model_volume(pod["spec"]) == expected
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert (env["MLMODEL_MODEL_URI"], env["MLMODEL_MODEL_MOUNT_DIR"]) == (uri, MODEL_MOUNT_DIR)


@pytest.mark.parametrize("example", ["claim.yaml", "image.yaml"])
def test_mlmodel_render_of_the_volume_examples_is_accepted(
    installed_cluster: Cluster, namespace: str, example: str
):
    document = EXAMPLES / example
    assert "created (server dry run)" in dry_run(
        installed_cluster,
        {
            **yaml.safe_load(document.read_text()),
            "metadata": {"name": "sentiment", "namespace": namespace},
        },
    )
    rendered = subprocess.run(
        [str(Path(sys.executable).with_name("mlmodel")), "render", str(document), "--namespace", namespace,
         "--no-servicemonitor"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    objects = [doc for doc in yaml.safe_load_all(rendered) if doc]
    for obj in objects:
        obj["metadata"]["namespace"] = namespace
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    assert "model" in {v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]}
    out = installed_cluster.kubectl(
        "apply", "--server-side", "--field-manager=mlmodel-operator", "--dry-run=server",
        "-f", "-", input=yaml.safe_dump_all(objects),
    ).stdout  # fmt: skip
    assert out.count("serverside-applied (server dry run)") == len(objects), out
