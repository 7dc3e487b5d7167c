"""`mlmodel render`: exactly the builders' objects, as multi-document YAML."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
import yaml
from mlmodel_operator.builders import build_children
from mlmodel_operator.render import main
from mlmodel_operator.settings import OperatorSettings
from support.crd import EXAMPLE_MLMODELS, SAMPLES


def run(argv: list[str]) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    code = main(argv, stdout=stdout, stderr=stderr)
    return code, stdout.getvalue(), stderr.getvalue()


@pytest.fixture
def clean_env(monkeypatch):
    """Render reads MLMODEL_OPERATOR_* like the operator; start from none."""
    for name in list(os.environ):
        if name.startswith("MLMODEL_OPERATOR_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_render_prints_exactly_the_builders_output(name, tmp_path, clean_env):
    path = tmp_path / "mlmodel.yaml"
    path.write_text(yaml.safe_dump(SAMPLES[name]))
    code, out, err = run([str(path)])
    assert (code, err) == (0, "")
    expected = build_children(SAMPLES[name], OperatorSettings(), servicemonitor_supported=True)
    assert list(yaml.safe_load_all(out)) == expected


def test_render_flags(tmp_path, clean_env):
    document = {k: v for k, v in SAMPLES["minimal"].items()}
    document["metadata"] = {"name": "sentiment"}  # no namespace in the file
    path = tmp_path / "m.yaml"
    path.write_text("# two documents, one of another kind\n---\n" + yaml.safe_dump({"kind": "ConfigMap"})
                    + "---\n" + yaml.safe_dump(document))
    code, out, err = run([str(path), "--image", "local/runtime:dev", "--no-servicemonitor",
                          "--namespace", "ml", "--model-uri", "s3://bucket/key.joblib"])
    assert code == 0, err
    objects = list(yaml.safe_load_all(out))
    assert [o["kind"] for o in objects] == ["Service", "Deployment"]
    assert {o["metadata"]["namespace"] for o in objects} == {"ml"}
    container = objects[1]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "local/runtime:dev"
    assert {"name": "MLMODEL_MODEL_URI", "value": "s3://bucket/key.joblib"} in container["env"]


def test_settings_come_from_the_environment(tmp_path, clean_env, monkeypatch):
    monkeypatch.setenv("MLMODEL_OPERATOR_RUNTIME_IMAGE", "env/runtime:1")
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(SAMPLES["minimal"]))
    _code, out, _ = run([str(path)])
    deployment = next(o for o in yaml.safe_load_all(out) if o["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "env/runtime:1"


@pytest.mark.parametrize("path", EXAMPLE_MLMODELS, ids=lambda p: p.parent.name)
def test_examples_render_once_given_a_cluster_uri(path, clean_env):
    code, out, err = run([str(path)])
    assert code == 2 and out == ""
    assert "relative path" in err and "--model-uri" in err
    code, out, err = run([str(path), "--model-uri", "https://models.example.com/m.joblib"])
    assert code == 0, err
    kinds = [o["kind"] for o in yaml.safe_load_all(out)]
    assert "Deployment" in kinds and "Service" in kinds


@pytest.mark.parametrize(
    "content,message",
    [
        ("kind: ConfigMap\n", "no document of kind MLModel"),
        ("a: [unclosed\n", "while parsing"),
        (yaml.safe_dump({**SAMPLES["minimal"], "spec": {"model": {"uri": "ftp://x/y"}}}), "spec.model"),
    ],
)
def test_bad_input_exits_2_with_a_message(tmp_path, content, message, clean_env):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    code, out, err = run([str(path)])
    assert (code, out) == (2, "")
    assert message in err and str(path) in err


def test_missing_file(tmp_path, clean_env):
    code, _, err = run([str(tmp_path / "nope.yaml")])
    assert code == 2 and "No such file" in err


def test_render_runs_as_a_process_reading_stdin(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mlmodel_operator.render", "-"],
        input=yaml.safe_dump(SAMPLES["full"]),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    kinds = [o["kind"] for o in yaml.safe_load_all(result.stdout)]
    assert kinds == ["NetworkPolicy", "Service", "Deployment", "HorizontalPodAutoscaler",
                     "PodDisruptionBudget", "ServiceMonitor"]
