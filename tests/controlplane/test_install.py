"""`kubectl apply -k operator/deploy` on the real API server, and what a user sees of the CRD."""

from __future__ import annotations

import pytest

from support.cluster import OPERATOR_NAMESPACE, REPO_ROOT, Cluster

pytestmark = pytest.mark.cluster


def test_install_applies_and_every_object_is_stored(installed_cluster: Cluster):
    # Applying again is a no-op: the install is declarative and the server agrees with it.
    again = installed_cluster.kubectl("apply", "-k", str(REPO_ROOT / "operator" / "deploy")).stdout
    assert "unchanged" in again and "created" not in again, again
    crd = installed_cluster.get("crd", "mlmodels.serving.mlmodel.io")
    assert crd is not None
    established = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert established["Established"] == "True" and established["NamesAccepted"] == "True"
    assert installed_cluster.get("clusterkopfpeering", "mlmodel-operator") is not None
    assert installed_cluster.get("serviceaccount", "mlmodel-operator", OPERATOR_NAMESPACE)
    assert installed_cluster.get("clusterrolebinding", "mlmodel-operator") is not None
    namespace = installed_cluster.get("namespace", OPERATOR_NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_kubectl_explain_answers_from_the_real_crd(installed_cluster: Cluster):
    explained = installed_cluster.kubectl("explain", "mlmodel.spec.model").stdout
    assert "GROUP:      serving.mlmodel.io" in explained
    assert "sha256" in explained and "uri" in explained
    # The field descriptions are the CRD's own (published through the server's OpenAPI).
    uri = installed_cluster.kubectl("explain", "mlmodel.spec.model.uri").stdout
    assert "https" in uri and "s3" in uri


def test_the_operator_service_account_may_do_what_the_role_says_and_no_more(
    installed_cluster: Cluster,
):
    def can(verb: str, resource: str, *extra: str) -> bool:
        result = installed_cluster.kubectl(
            "auth", "can-i", verb, resource, *extra,
            f"--as=system:serviceaccount:{OPERATOR_NAMESPACE}:mlmodel-operator",
            check=False,
        )
        return result.stdout.strip() == "yes"

    assert can("patch", "mlmodels.serving.mlmodel.io", "-A")
    assert can("create", "deployments.apps", "-n", "default")
    assert can("list", "pods", "-n", "default")
    # Least privilege, checked by the real authorizer: no secrets, no deleting Deployments.
    assert not can("get", "secrets", "-n", "default")
    assert not can("delete", "deployments.apps", "-n", "default")
    assert not can("patch", "clusterkopfpeerings.kopf.dev/someone-else")
