"""The install's metadata store wiring: an optional database Secret, a writable cache, and a
runtime image that `kustomize edit set image` reaches."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from mlmodel_operator.settings import OperatorSettings
from test_install import DEPLOY, REPO_ROOT, by_kind, kustomize

RUNTIME_IMAGE = "ghcr.io/mlmodel-operator/runtime"
OPERATOR_IMAGE = "ghcr.io/mlmodel-operator/operator"


def operator_container(objects: list[dict]) -> dict:
    return by_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]


def env_of(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container["env"]}


def test_database_url_comes_from_an_optional_secret_and_never_inline() -> None:
    objects = kustomize(DEPLOY)
    env = env_of(operator_container(objects))
    for name in ("MLMODEL_OPERATOR_DATABASE_URL", "MLMODEL_DATABASE_URL"):
        assert "value" not in env[name]
        assert env[name]["valueFrom"] == {
            "secretKeyRef": {"name": "mlmodel-operator-db", "key": "url", "optional": True}
        }
    # The operator never reads Secrets itself: the kubelet resolves the reference.
    rules = by_kind(objects, "ClusterRole")[0]["rules"]
    assert not any("secrets" in rule["resources"] for rule in rules)


def test_the_sqlite_fallback_is_writable_under_a_read_only_root() -> None:
    objects = kustomize(DEPLOY)
    container = operator_container(objects)
    pod = by_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = env_of(container)
    cache_dir = env["MLMODEL_OPERATOR_CACHE_DIR"]["value"]
    assert env["MLMODEL_CACHE_DIR"]["value"] == cache_dir  # `mlmodel history` in the pod
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == cache_dir]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" in volume and not mount.get("readOnly")


def test_every_operator_env_var_is_a_setting() -> None:
    env = env_of(operator_container(kustomize(DEPLOY)))
    fields = {f"MLMODEL_OPERATOR_{name.upper()}" for name in OperatorSettings.model_fields}
    ours = {name for name in env if name.startswith("MLMODEL_OPERATOR_")}
    assert ours <= fields, ours - fields
    assert env["MLMODEL_OPERATOR_RUNTIME_IMAGE"]["value"] == f"{RUNTIME_IMAGE}:0.1.0"


def test_set_image_of_the_runtime_rewrites_the_operator_default(tmp_path: Path) -> None:
    """What `kustomize edit set image RUNTIME=...` leaves in the kustomization, rendered."""
    shutil.copytree(REPO_ROOT / "crds", tmp_path / "crds")
    shutil.copytree(DEPLOY, tmp_path / "operator" / "deploy")
    path = tmp_path / "operator" / "deploy" / "kustomization.yaml"
    kustomization = yaml.safe_load(path.read_text())
    images = {entry["name"]: entry for entry in kustomization["images"]}
    images[RUNTIME_IMAGE].update({"newName": "registry.local/runtime", "newTag": "2.0.0"})
    images[OPERATOR_IMAGE].update({"newName": "registry.local/operator", "newTag": "2.0.0"})
    path.write_text(yaml.safe_dump(kustomization))

    container = operator_container(kustomize(path.parent))
    env = env_of(container)
    assert env["MLMODEL_OPERATOR_RUNTIME_IMAGE"]["value"] == "registry.local/runtime:2.0.0"
    assert container["image"] == "registry.local/operator:2.0.0"
    # Other values are not images of that name, and stay as they are.
    assert env["MLMODEL_OPERATOR_LOG_FORMAT"]["value"] == "json"
    assert env["MLMODEL_OPERATOR_CACHE_DIR"]["value"] == "/var/cache/mlmodel"
    assert "valueFrom" in env["POD_ID"]
