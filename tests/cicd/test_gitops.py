"""The GitOps example: kustomize renders every overlay, each MLModel passes the CRD schema (and
its CEL rules), and the Argo CD / Flux objects point at folders that exist."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml
from cicd_support import GITOPS_DIR, REPO_ROOT, kustomize_build, load_workflow

BASE = GITOPS_DIR / "base"
OVERLAYS = {"staging": GITOPS_DIR / "overlays" / "staging",
            "production": GITOPS_DIR / "overlays" / "production"}
MODELS = ["sentiment", "house-prices"]
RUNTIME_IMAGE_NAME = "ghcr.io/mlmodel-operator/runtime"
HEALTH_KEY = "resource.customizations.health.serving.mlmodel.io_MLModel"


def mlmodels(objects: list[dict]) -> dict[str, dict]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == "MLModel"}


def kustomization(directory: Path) -> dict:
    return yaml.safe_load((directory / "kustomization.yaml").read_text())


def write_kustomization(directory: Path, target: Path, images: list[dict]) -> None:
    """What `kustomize edit set image` leaves behind: an `images:` entry over the target."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        # kustomize takes only relative paths to other kustomizations.
        "resources": [os.path.relpath(target, directory)],
        "images": images,
    }))


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {"base": kustomize_build(BASE)} | {
        name: kustomize_build(path) for name, path in OVERLAYS.items()
    }


def test_base_has_one_folder_per_model(rendered):
    assert sorted(p.name for p in BASE.iterdir() if p.is_dir()) == sorted(MODELS)
    assert sorted(mlmodels(rendered["base"])) == sorted(MODELS)


@pytest.mark.parametrize("layer", ["base", "staging", "production"])
def test_every_rendered_mlmodel_passes_the_crd(rendered, crd_check, layer):
    models = mlmodels(rendered[layer])
    assert sorted(models) == sorted(MODELS)
    for name, model in models.items():
        assert crd_check.mlmodel_errors(model) == [], f"{layer}/{name}"


def test_the_crd_check_refuses_a_broken_overlay_result(rendered, crd_check):
    # The check above can fail: replicas and autoscaling together break a CEL rule, a short
    # digest breaks the schema.
    model = mlmodels(rendered["production"])["sentiment"]
    both = crd_check.with_changes(model, {"spec.replicas": 2})
    assert any("not both" in error for error in crd_check.mlmodel_errors(both))
    short = crd_check.with_changes(model, {"spec.model.sha256": "abc"})
    assert crd_check.mlmodel_errors(short)


@pytest.mark.parametrize("model", MODELS)
def test_base_serves_the_trained_example_artifact(rendered, model):
    recorded = (REPO_ROOT / "examples" / model / "model.joblib.sha256").read_text().split()[0]
    spec = mlmodels(rendered["base"])[model]["spec"]["model"]
    assert spec["sha256"] == recorded, (
        f"examples/{model} was retrained: copy its new sha256 into examples/gitops/base/{model}"
    )
    # A cluster reaches remote stores only: no relative paths in a GitOps repository.
    assert re.match(r"^(https://|s3://)", spec["uri"]), spec["uri"]


@pytest.mark.parametrize("environment", ["staging", "production"])
def test_overlay_sets_namespace_image_tag_and_label(rendered, environment):
    objects = rendered[environment]
    namespace = f"mlmodels-{environment}"
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"] == [namespace]
    (entry,) = [i for i in kustomization(OVERLAYS[environment])["images"]
                if i["name"] == RUNTIME_IMAGE_NAME]
    for model in mlmodels(objects).values():
        assert model["metadata"]["namespace"] == namespace
        assert model["metadata"]["labels"]["environment"] == environment
        assert model["spec"]["runtime"]["image"] == f"{RUNTIME_IMAGE_NAME}:{entry['newTag']}"


def test_staging_runs_fixed_small_replicas(rendered):
    for model in mlmodels(rendered["staging"]).values():
        assert model["spec"]["replicas"] == 1
        assert "autoscaling" not in model["spec"]
        assert model["spec"]["predictionLogging"]["sampleRate"] == 1


def test_production_autoscales_behind_a_network_policy(rendered):
    models = mlmodels(rendered["production"])
    for model in models.values():
        spec = model["spec"]
        assert "replicas" not in spec
        assert 1 < spec["autoscaling"]["minReplicas"] < spec["autoscaling"]["maxReplicas"]
        assert spec["networkPolicy"]["enabled"] is True
        assert spec["database"]["secretRef"] == {"name": "mlmodel-db", "key": "url"}
    assert models["sentiment"]["spec"]["runtime"]["workers"] == 2


def test_set_image_rewrites_every_mlmodel_runtime_image(tmp_path):
    # base/kustomizeconfig.yaml teaches kustomize where MLModels keep their image; without it
    # `kustomize edit set image` (the release pipeline's deploy step) would change nothing.
    write_kustomization(tmp_path / "bump", OVERLAYS["staging"], [
        {"name": RUNTIME_IMAGE_NAME, "newName": "registry.example.com/runtime", "newTag": "9.8.7"},
    ])
    models = mlmodels(kustomize_build(tmp_path / "bump"))
    assert sorted(models) == sorted(MODELS)
    assert {m["spec"]["runtime"]["image"] for m in models.values()} == {
        "registry.example.com/runtime:9.8.7"
    }


def test_release_pipeline_image_names_match_the_kustomizations(tmp_path):
    release = load_workflow(REPO_ROOT / ".github" / "workflows" / "release.yml")
    operator_name = release["env"]["OPERATOR_IMAGE_NAME"]
    assert release["env"]["RUNTIME_IMAGE_NAME"] == RUNTIME_IMAGE_NAME
    # The operator install renders a container with that image name, and setting it takes.
    write_kustomization(tmp_path / "install", REPO_ROOT / "operator" / "deploy", [
        {"name": operator_name, "newName": "ghcr.io/acme/operator", "newTag": "1.2.3"},
    ])
    deployments = [o for o in kustomize_build(tmp_path / "install") if o["kind"] == "Deployment"]
    images = {c["image"] for d in deployments for c in d["spec"]["template"]["spec"]["containers"]}
    assert "ghcr.io/acme/operator:1.2.3" in images


def test_argocd_applications_sync_the_overlays():
    applications = list(yaml.safe_load_all((GITOPS_DIR / "argocd" / "applications.yaml").read_text()))
    assert {a["metadata"]["name"] for a in applications} == {
        "mlmodels-staging", "mlmodels-production"}
    for application in applications:
        assert application["apiVersion"] == "argoproj.io/v1alpha1"
        assert application["kind"] == "Application"
        assert application["metadata"]["namespace"] == "argocd"
        spec = application["spec"]
        environment = application["metadata"]["name"].removeprefix("mlmodels-")
        assert REPO_ROOT / spec["source"]["path"] == OVERLAYS[environment]
        assert spec["source"]["repoURL"].startswith("https://")
        assert spec["source"]["targetRevision"] == "main"
        assert spec["destination"]["namespace"] == kustomization(OVERLAYS[environment])["namespace"]
        assert spec["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}


def test_flux_syncs_the_overlays_from_a_git_repository():
    documents = list(yaml.safe_load_all((GITOPS_DIR / "flux" / "sync.yaml").read_text()))
    (source,) = [d for d in documents if d["kind"] == "GitRepository"]
    assert source["apiVersion"] == "source.toolkit.fluxcd.io/v1"
    assert source["spec"]["ref"] == {"branch": "main"}
    syncs = [d for d in documents if d["kind"] == "Kustomization"]
    assert {s["metadata"]["name"] for s in syncs} == {"mlmodels-staging", "mlmodels-production"}
    for sync in syncs:
        assert sync["apiVersion"] == "kustomize.toolkit.fluxcd.io/v1"
        spec = sync["spec"]
        assert spec["sourceRef"] == {"kind": "GitRepository", "name": source["metadata"]["name"]}
        environment = sync["metadata"]["name"].removeprefix("mlmodels-")
        assert (REPO_ROOT / spec["path"]).resolve() == OVERLAYS[environment]
        assert spec["prune"] is True
        # Flux then waits for the MLModels' Ready condition (kstatus) before reporting success.
        assert spec["wait"] is True


def test_argocd_cm_snippet_carries_the_health_check_verbatim():
    config_map = yaml.safe_load((GITOPS_DIR / "argocd" / "argocd-cm.yaml").read_text())
    assert config_map["kind"] == "ConfigMap"
    assert (config_map["metadata"]["name"], config_map["metadata"]["namespace"]) == (
        "argocd-cm", "argocd")
    assert list(config_map["data"]) == [HEALTH_KEY]
    assert config_map["data"][HEALTH_KEY] == (GITOPS_DIR / "argocd" / "mlmodel-health.lua").read_text()
