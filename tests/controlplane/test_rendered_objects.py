"""What the builders make, and what `mlmodel render` prints, is accepted by the real API server
(`kubectl apply --server-side --dry-run=server`): schemas, defaults, admission and Pod Security
as the server applies them, not as a schema copy here would."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from mlmodel_operator.builders import build_children
from mlmodel_operator.settings import OperatorSettings
from support.cluster import REPO_ROOT, Cluster, httproute_crd_installed, servicemonitor_crd
from support.crd import SAMPLES

pytestmark = pytest.mark.cluster
EXAMPLES = sorted(REPO_ROOT.glob("examples/*/mlmodel.yaml"))


@pytest.fixture(scope="module")
def with_servicemonitors(installed_cluster: Cluster) -> Iterator[Cluster]:
    """The optional CRDs the builders may write to: the ServiceMonitor's and the HTTPRoute's."""
    installed_cluster.kubectl("apply", "--server-side", "-f", str(servicemonitor_crd()))
    installed_cluster.kubectl(
        "wait", "--for=condition=Established", "crd/servicemonitors.monitoring.coreos.com", "--timeout=60s"
    )
    with httproute_crd_installed(installed_cluster):
        yield installed_cluster
    installed_cluster.kubectl("delete", "crd", "servicemonitors.monitoring.coreos.com", "--ignore-not-found")


def server_dry_run(cluster: Cluster, objects: list[dict], namespace: str) -> str:
    for obj in objects:
        obj["metadata"]["namespace"] = namespace
    return cluster.kubectl(
        "apply", "--server-side", "--field-manager=mlmodel-operator", "--dry-run=server",
        "-f", "-", input=yaml.safe_dump_all(objects),
    ).stdout


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_child_of_the_sample_mlmodels_is_accepted(with_servicemonitors: Cluster, namespace: str, name: str):
    children = build_children(SAMPLES[name], OperatorSettings(), servicemonitor_supported=True)
    out = server_dry_run(with_servicemonitors, children, namespace)
    assert out.count("serverside-applied (server dry run)") == len(children), out


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.parent.name)
def test_mlmodel_render_of_each_example_is_accepted(with_servicemonitors: Cluster, namespace: str, path: Path):
    rendered = subprocess.run(
        [str(Path(sys.executable).with_name("mlmodel")), "render", str(path), "--namespace", namespace,
         "--model-uri", f"https://models.example.com/{path.parent.name}/model.joblib"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    objects = [doc for doc in yaml.safe_load_all(rendered) if doc]
    assert {o["kind"] for o in objects} >= {"Deployment", "Service"}
    out = server_dry_run(with_servicemonitors, objects, namespace)
    assert out.count("(server dry run)") == len(objects), out
