"""pvc:// and oci:// model URIs, offline: the CRD and the spec model accept and refuse the same ones,
the Deployment mounts the volume read-only where the runtime looks, and the pods' state turns a
missing claim or a dropped image volume into a reason that says so."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from mlmodel_operator.builders import build_deployment
from mlmodel_operator.pods import container_problem
from mlmodel_operator.settings import OperatorSettings
from mlmodel_runtime.artifacts.uris import MountedSource, parse_source
from mlmodel_runtime.settings import RuntimeSettings
from mlmodel_spec.model_uris import MODEL_MOUNT_DIR, ClaimVolume, ImageVolume, parse_mounted
from mlmodel_spec.resource import InvalidSpec, parse_spec
from support.crd import BAD_VOLUME_URIS, DIGEST, SAMPLES, VOLUME_URIS, mlmodel_errors, with_changes

SETTINGS = OperatorSettings()
URI_RULE = "other schemes are not supported"


@pytest.mark.parametrize("case", sorted(VOLUME_URIS))
def test_volume_uris_are_accepted_by_the_crd_and_the_spec_model(case):
    document = with_changes(SAMPLES["minimal"], {"spec.model.uri": VOLUME_URIS[case]})
    assert mlmodel_errors(document) == []
    assert parse_spec(document).model.uri == VOLUME_URIS[case]


@pytest.mark.parametrize("case", sorted(BAD_VOLUME_URIS))
def test_malformed_volume_uris_are_refused_by_both_with_the_crd_message(case):
    document = with_changes(SAMPLES["minimal"], {"spec.model.uri": BAD_VOLUME_URIS[case]})
    errors = mlmodel_errors(document)
    assert any(URI_RULE in error and "pvc://CLAIM/PATH" in error for error in errors), errors
    with pytest.raises(InvalidSpec, match="spec.model.uri"):
        parse_spec(document)
    assert parse_mounted(BAD_VOLUME_URIS[case]) is None


@pytest.mark.parametrize(
    ("uri", "model_format", "expected"),
    [
        (
            "pvc://models/sentiment/model.joblib",
            "sklearn",
            ClaimVolume("models", "sentiment/model.joblib"),
        ),
        (
            "oci://registry.example.com/m/s:1.0",
            "sklearn",
            ImageVolume("registry.example.com/m/s:1.0", "model.joblib"),
        ),
        (
            "oci://registry.example.com/m/s:1.0",
            "onnx",
            ImageVolume("registry.example.com/m/s:1.0", "model.onnx"),
        ),
        (
            f"oci://localhost:5000/s:1@sha256:{DIGEST}#a/b.onnx",
            "onnx",
            ImageVolume(f"localhost:5000/s:1@sha256:{DIGEST}", "a/b.onnx"),
        ),
        ("https://models.example.com/model.joblib", "sklearn", None),
        ("/models/model.joblib", "sklearn", None),
    ],
)
def test_what_a_uri_mounts(uri, model_format, expected):
    assert parse_mounted(uri, model_format) == expected


def _pod_spec(name: str) -> dict:
    document = SAMPLES[name]
    return build_deployment(document, parse_spec(document), SETTINGS)["spec"]["template"]["spec"]


def _volume(pod_spec: dict, name: str) -> dict | None:
    return next((v for v in pod_spec["volumes"] if v["name"] == name), None)


def _env(pod_spec: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in pod_spec["containers"][0]["env"]}


def test_a_claim_is_mounted_read_only_where_the_runtime_reads_it():
    pod_spec = _pod_spec("claim")
    assert _volume(pod_spec, "model") == {
        "name": "model",
        "persistentVolumeClaim": {"claimName": "models", "readOnly": True},
    }
    mounts = pod_spec["containers"][0]["volumeMounts"]
    assert {"name": "model", "mountPath": MODEL_MOUNT_DIR, "readOnly": True} in mounts
    env = _env(pod_spec)
    assert env["MLMODEL_MODEL_URI"] == "pvc://models/sentiment/1.0/model.joblib"
    assert env["MLMODEL_MODEL_MOUNT_DIR"] == MODEL_MOUNT_DIR


def test_an_image_is_mounted_as_an_image_volume_pulled_with_the_pods_secrets():
    pod_spec = _pod_spec("image")
    assert _volume(pod_spec, "model") == {
        "name": "model",
        "image": {
            "reference": "registry.example.com/models/sentiment:1.0",
            "pullPolicy": "IfNotPresent",
        },
    }
    assert pod_spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert {"name": "model", "mountPath": MODEL_MOUNT_DIR, "readOnly": True} in pod_spec[
        "containers"
    ][0]["volumeMounts"]
    assert _env(pod_spec)["MLMODEL_MODEL_MOUNT_DIR"] == MODEL_MOUNT_DIR


@pytest.mark.parametrize("name", ["minimal", "full", "absolute-path", "onnx-unverified"])
def test_other_sources_get_no_model_volume_and_their_pods_do_not_change(name):
    pod_spec = _pod_spec(name)
    assert _volume(pod_spec, "model") is None
    assert "MLMODEL_MODEL_MOUNT_DIR" not in _env(pod_spec)


@pytest.mark.parametrize(
    ("name", "relative"), [("claim", "sentiment/1.0/model.joblib"), ("image", "model.joblib")]
)
def test_the_runtime_opens_the_file_in_the_mounted_volume(name, relative, monkeypatch):
    """The env the Deployment gives the container, read by the runtime's own settings and parser."""
    for variable, value in _env(_pod_spec(name)).items():
        if value is not None:
            monkeypatch.setenv(variable, value)
    settings = RuntimeSettings()
    source = parse_source(settings.model_uri, settings.model_mount_dir, settings.model_format)
    assert isinstance(source, MountedSource)
    assert source.path == Path(MODEL_MOUNT_DIR) / relative


def _stored_pod(name: str, *, status: dict | None = None, drop_model_volume: bool = False) -> dict:
    """A pod of the sample's Deployment as the API server would store it."""
    spec = copy.deepcopy(_pod_spec(name))
    if drop_model_volume:
        # What the API server does to image volumes without the ImageVolume feature gate
        # (pkg/api/pod dropImageVolumes): the volume and every mount of it go.
        spec["volumes"] = [v for v in spec["volumes"] if v["name"] != "model"]
        for container in spec["containers"]:
            container["volumeMounts"] = [
                m for m in container["volumeMounts"] if m["name"] != "model"
            ]
    return {
        "metadata": {"name": f"{name}-abc", "namespace": "models"},
        "spec": spec,
        "status": status or {"phase": "Running", "containerStatuses": []},
    }


def test_a_missing_claim_is_reported_as_claim_not_found():
    # The scheduler's condition message, as kube-scheduler 1.36.3 wrote it on the local cluster
    # (tests/controlplane/test_model_volumes.py).
    message = '0/1 nodes are available: persistentvolumeclaim "models" not found. not found'
    pending = _stored_pod(
        "claim",
        status={
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                }
            ],
        },
    )
    reason, text = container_problem([pending])
    assert reason == "ClaimNotFound"
    assert text.startswith(
        "PersistentVolumeClaim models named by spec.model.uri does not exist in namespace models"
    )
    assert message in text


def test_other_scheduling_failures_stay_unschedulable():
    pending = _stored_pod(
        "claim",
        status={
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/1 nodes are available: 1 Insufficient memory."}
            ],
        },
    )  # fmt: skip
    assert container_problem([pending])[0] == "Unschedulable"


def test_an_image_volume_the_api_server_dropped_is_reported():
    reason, message = container_problem([_stored_pod("image", drop_model_volume=True)])
    assert reason == "ImageVolumeUnsupported"
    assert "oci://registry.example.com/models/sentiment:1.0" in message
    assert "Kubernetes 1.35 or later" in message
    assert "ImageVolume feature gate" in message


@pytest.mark.parametrize("name", ["image", "claim", "minimal"])
def test_pods_with_their_volumes_are_not_a_problem(name):
    assert container_problem([_stored_pod(name)]) is None
