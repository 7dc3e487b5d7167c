"""`kubectl apply -k operator/deploy` on the real API server, and what a user sees of the CRD."""

from __future__ import annotations

import pytest
from support.cluster import OPERATOR_NAMESPACE, REPO_ROOT, Cluster
from support.ports import wait_until

pytestmark = pytest.mark.cluster


def test_install_applies_and_every_object_is_stored(installed_cluster: Cluster):
    # Applying again is a no-op: the install is declarative and the server agrees with it.
    again = installed_cluster.kubectl("apply", "-k", str(REPO_ROOT / "operator" / "deploy")).stdout
    assert "unchanged" in again and "created" not in again, again
    crd = installed_cluster.get("crd", "mlmodels.serving.mlmodel.io")
    assert crd is not None
    established = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert established["Established"] == "True" and established["NamesAccepted"] == "True"
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
    # Least privilege, checked by the real authorizer: no secrets, no deleting an MLModel or a
    # pod (it deletes only children the spec dropped: test_rbac.py proves each verb is used).
    assert not can("get", "secrets", "-n", "default")
    assert not can("delete", "mlmodels.serving.mlmodel.io", "-n", "default")
    assert not can("delete", "pods", "-n", "default")
    assert not can("patch", "clusterkopfpeerings.kopf.dev/someone-else")


def test_the_operator_creates_its_peering_object_and_peers_through_it(
    installed_cluster: Cluster, run_operator
):
    """Found on the real server: the install could not carry the ClusterKopfPeering object,
    since `kubectl apply -k` refuses an object whose CRD it creates in the same run."""
    installed_cluster.kubectl("delete", "clusterkopfpeering", "mlmodel-operator", "--ignore-not-found")
    run_operator("--peering=mlmodel-operator")
    peering = wait_until(
        lambda: (p := installed_cluster.get("clusterkopfpeering", "mlmodel-operator"))
        and (p.get("status") or {})
        and p,
        what="kopf's keep-alive in the peering object",
    )
    assert len(peering["status"]) == 1
