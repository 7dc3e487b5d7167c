"""The example scrape config, PodMonitor and log shippers agree with what the operator deploys."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml
from mlmodel_operator.builders.common import APP_NAME
from mlmodel_operator.render import render
from mlmodel_operator.settings import OperatorSettings
from processes import PROMTOOL
from promql import MONITORING, RULES

LOGGING = MONITORING / "logging"


def operator_deployment(repo_root: Path) -> dict:
    return yaml.safe_load((repo_root / "operator" / "deploy" / "deployment.yaml").read_text())


def test_scrape_config_passes_promtool(tmp_path: Path) -> None:
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    assert [MONITORING / f for f in config["rule_files"]] == [RULES]
    result = subprocess.run([PROMTOOL, "check", "config", str(MONITORING / "prometheus.yml")], check=False, capture_output=True, text=True, timeout=60)
    if "field kubernetes_sd_configs not found" in result.stdout + result.stderr:
        # Debian builds Prometheus without Kubernetes discovery: check everything else (relabelling,
        # rule files) with file discovery in its place.
        for job in config["scrape_configs"]:
            job.pop("kubernetes_sd_configs")
            job["file_sd_configs"] = [{"files": [str(tmp_path / "targets.json")]}]
        config["rule_files"] = [str(RULES)]
        copy = tmp_path / "prometheus.yml"
        copy.write_text(yaml.safe_dump(config))
        result = subprocess.run([PROMTOOL, "check", "config", str(copy)], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def rendered_runtime_pod(repo_root: Path) -> dict:
    """The pod template the operator makes for the sentiment example (`mlmodel render`)."""
    text = (repo_root / "examples" / "sentiment" / "mlmodel.yaml").read_text()
    children = render(text, OperatorSettings(), model_uri="https://models.example.com/sentiment/model.joblib")
    return next(c for c in children if c["kind"] == "Deployment")["spec"]["template"]


def test_scrape_config_keeps_the_pods_the_operator_makes(repo_root: Path) -> None:
    jobs = {job["job_name"]: job for job in yaml.safe_load((MONITORING / "prometheus.yml").read_text())["scrape_configs"]}
    pod = rendered_runtime_pod(repo_root)
    labels = pod["metadata"]["labels"]
    keep = [r for r in jobs["mlmodel-runtime"]["relabel_configs"] if r.get("action") == "keep"]
    assert keep[0]["source_labels"] == [
        "__meta_kubernetes_pod_label_app_kubernetes_io_managed_by", "__meta_kubernetes_pod_label_app_kubernetes_io_name"]
    assert re.fullmatch(keep[0]["regex"], f"{labels['app.kubernetes.io/managed-by']};{labels['app.kubernetes.io/name']}")
    port_names = [p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", ())]
    assert [name for name in port_names if re.fullmatch(keep[1]["regex"], name)] == ["http"]

    operator_pod = operator_deployment(repo_root)["spec"]["template"]
    operator_keep = [r for r in jobs["mlmodel-operator"]["relabel_configs"] if r.get("action") == "keep"]
    assert re.fullmatch(operator_keep[0]["regex"], operator_pod["metadata"]["labels"]["app.kubernetes.io/name"])
    port_names = {p["name"] for p in operator_pod["spec"]["containers"][0]["ports"]}
    assert re.fullmatch(operator_keep[1]["regex"], "metrics") and "metrics" in port_names


def test_podmonitor_selects_the_operator_pod_and_its_metrics_port(repo_root: Path) -> None:
    monitor = yaml.safe_load((MONITORING / "podmonitor-operator.yaml").read_text())
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    deployment = operator_deployment(repo_root)
    pod = deployment["spec"]["template"]
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [deployment["metadata"]["namespace"]]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    container = pod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MLMODEL_OPERATOR_METRICS_PORT"] == str(ports[endpoint["port"]])


def test_fluent_bit_tails_container_logs_merges_the_json_and_ships_to_elasticsearch() -> None:
    config = yaml.safe_load((LOGGING / "fluent-bit.yaml").read_text())
    pipeline = config["pipeline"]
    tail = next(i for i in pipeline["inputs"] if i["name"] == "tail")
    assert tail["path"].startswith("/var/log/containers/") and "cri" in tail["multiline.parser"]
    kubernetes = next(f for f in pipeline["filters"] if f["name"] == "kubernetes")
    assert kubernetes["merge_log"] is True and kubernetes["keep_log"] is False  # YAML 1.1: on/off
    grep = next(f for f in pipeline["filters"] if f["name"] == "grep")
    accessor, pattern = grep["regex"].split(" ", 1)
    assert accessor == "$kubernetes['labels']['app.kubernetes.io/name']"
    assert re.search(pattern, APP_NAME) and re.search(pattern, "mlmodel-operator")
    assert not re.search(pattern, "some-other-app")
    es = next(o for o in pipeline["outputs"] if o["name"] == "es")
    assert es["match"] == tail["tag"]
    # Credentials and addresses come from the environment, never from the file.
    for key in ("host", "port", "http_user", "http_passwd"):
        assert re.fullmatch(r"\$\{[A-Z_]+\}", str(es[key])), key
    assert es["tls"] is True and es["suppress_type_name"] is True
    assert es["index"].startswith("logs-") and es.get("logstash_format") is None  # a data stream, @timestamp kept


def test_filebeat_picks_our_pods_and_decodes_json_to_the_top_level() -> None:
    config = yaml.safe_load((LOGGING / "filebeat.yml").read_text())
    provider = config["filebeat.autodiscover"]["providers"][0]
    assert provider["type"] == "kubernetes"
    template = provider["templates"][0]
    names = {c["equals"]["kubernetes.labels.app_kubernetes_io/name"] for c in template["condition"]["or"]}
    assert names == {APP_NAME, "mlmodel-operator"}
    stream = template["config"][0]
    assert stream["type"] == "filestream" and stream["paths"][0].startswith("/var/log/containers/")
    ndjson = next(p["ndjson"] for p in stream["parsers"] if "ndjson" in p)
    assert ndjson["target"] == "" and ndjson["expand_keys"] is True
    assert re.fullmatch(r"\$\{[A-Z_]+\}", config["output.elasticsearch"]["password"])
