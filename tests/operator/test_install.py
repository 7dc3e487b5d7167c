"""The operator install (`kubectl apply -k operator/deploy`): renders, validates, least privilege."""

from __future__ import annotations

import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml
from mlmodel_operator.builders import build_children
from mlmodel_operator.settings import OperatorSettings
from support.crd import CRD_PATH, K8S_VERSION, REPO_ROOT, SAMPLES, schema_errors

DEPLOY = REPO_ROOT / "operator" / "deploy"
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
NAMESPACE = "mlmodel-system"
IMAGE = "ghcr.io/mlmodel-operator/operator"
# Where each child kind lives in the API, for the RBAC check.
API_RESOURCES = {
    "Deployment": ("apps", "deployments"),
    "Service": ("", "services"),
    "HorizontalPodAutoscaler": ("autoscaling", "horizontalpodautoscalers"),
    "PodDisruptionBudget": ("policy", "poddisruptionbudgets"),
    "ServiceMonitor": ("monitoring.coreos.com", "servicemonitors"),
    "NetworkPolicy": ("networking.k8s.io", "networkpolicies"),
    "Ingress": ("networking.k8s.io", "ingresses"),
    "HTTPRoute": ("gateway.networking.k8s.io", "httproutes"),
}


def kustomize(path) -> list[dict]:
    result = subprocess.run(
        [KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    return kustomize(DEPLOY)


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [obj for obj in objects if obj["kind"] == kind]


def test_install_renders_the_expected_objects(rendered):
    kinds = sorted(obj["kind"] for obj in rendered)
    assert kinds == sorted(
        ["Namespace", "CustomResourceDefinition", "CustomResourceDefinition",
         "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment"]
    )
    crds = {obj["metadata"]["name"]: obj for obj in by_kind(rendered, "CustomResourceDefinition")}
    assert set(crds) == {"mlmodels.serving.mlmodel.io", "clusterkopfpeerings.kopf.dev"}
    # The install carries the very CRD in crds/ (plus the kustomization's common label).
    shipped = yaml.safe_load(CRD_PATH.read_text())
    assert crds["mlmodels.serving.mlmodel.io"]["spec"] == shipped["spec"]


def test_every_rendered_object_passes_its_schema(rendered):
    peering_crd = next(o for o in rendered if o["metadata"]["name"] == "clusterkopfpeerings.kopf.dev")
    peering_schema = peering_crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for obj in rendered:
        if obj["kind"] == "ClusterKopfPeering":
            assert schema_errors(peering_schema, obj) == []
            assert "namespace" not in obj["metadata"]  # cluster-scoped
        else:
            assert kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_namespaced_objects_live_in_mlmodel_system(rendered):
    for kind in ("ServiceAccount", "Deployment"):
        for obj in by_kind(rendered, kind):
            assert obj["metadata"]["namespace"] == NAMESPACE
    assert by_kind(rendered, "Namespace")[0]["metadata"]["name"] == NAMESPACE
    binding = by_kind(rendered, "ClusterRoleBinding")[0]
    account = by_kind(rendered, "ServiceAccount")[0]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    role = by_kind(rendered, "ClusterRole")[0]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": role["metadata"]["name"]}


def test_operator_deployment(rendered):
    deployment = by_kind(rendered, "Deployment")[0]
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == by_kind(rendered, "ServiceAccount")[0]["metadata"]["name"]
    container = pod["containers"][0]
    assert container["image"] == f"{IMAGE}:0.1.0"
    assert container["command"] == ["mlmodel", "operator"]
    # The operator creates this peering object itself (tests/controlplane/test_install.py).
    assert "--peering=mlmodel-operator" in container["args"]
    liveness = next(a for a in container["args"] if a.startswith("--liveness="))
    port = int(liveness.split(":")[-1].split("/")[0])
    probe = container["livenessProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[probe["port"]] == port and liveness.endswith(probe["path"])
    context = container["securityContext"]
    assert context["runAsNonRoot"] and context["readOnlyRootFilesystem"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


def test_the_image_is_set_the_kustomize_way(tmp_path):
    """`kustomize edit set image IMAGE=registry.local/operator:dev` rewrites the images entry."""
    shutil.copytree(REPO_ROOT / "crds", tmp_path / "crds")
    shutil.copytree(DEPLOY, tmp_path / "operator" / "deploy")
    kustomization_path = tmp_path / "operator" / "deploy" / "kustomization.yaml"
    kustomization = yaml.safe_load(kustomization_path.read_text())
    [entry] = [image for image in kustomization["images"] if image["name"] == IMAGE]
    entry.update({"newName": "registry.local/operator", "newTag": "dev"})
    kustomization_path.write_text(yaml.safe_dump(kustomization))
    deployment = by_kind(kustomize(kustomization_path.parent), "Deployment")[0]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.local/operator:dev"


def _allowed(rules: list[dict], group: str, resource: str, verb: str) -> bool:
    return any(
        group in rule.get("apiGroups", []) and resource in rule.get("resources", [])
        and verb in rule.get("verbs", [])
        for rule in rules
    )


def test_rbac_covers_every_child_the_builders_make(rendered):
    rules = by_kind(rendered, "ClusterRole")[0]["rules"]
    kinds = {
        child["kind"]
        for mlmodel in SAMPLES.values()
        for child in build_children(mlmodel, OperatorSettings(), servicemonitor_supported=True)
    }
    assert kinds == set(API_RESOURCES)
    for kind in kinds:
        group, resource = API_RESOURCES[kind]
        # What Server-Side Apply needs for every child (an apply that creates is authorised as
        # a create too); the exact set is proven against the real server's audit log in
        # tests/controlplane/test_rbac.py.
        for verb in ("create", "patch"):
            assert _allowed(rules, group, resource, verb), f"{verb} {resource}"
    assert _allowed(rules, "serving.mlmodel.io", "mlmodels", "watch")
    assert _allowed(rules, "serving.mlmodel.io", "mlmodels/status", "patch")
    assert _allowed(rules, "", "events", "create")
    assert _allowed(rules, "apiextensions.k8s.io", "customresourcedefinitions", "get")
    assert _allowed(rules, "kopf.dev", "clusterkopfpeerings", "patch")


def test_rbac_is_least_privilege(rendered):
    rules = by_kind(rendered, "ClusterRole")[0]["rules"]
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
        # It never reads Secrets: the runtime gets them through env and volumes.
        assert "secrets" not in rule["resources"]
        assert not {"escalate", "bind", "impersonate", "update", "deletecollection"} & set(rule["verbs"])
    assert not _allowed(rules, "serving.mlmodel.io", "mlmodels", "create")
    assert not _allowed(rules, "serving.mlmodel.io", "mlmodels", "delete")


def test_crd_kustomization_alone(tmp_path):
    objects = kustomize(REPO_ROOT / "crds")
    assert [o["metadata"]["name"] for o in objects] == ["mlmodels.serving.mlmodel.io"]
