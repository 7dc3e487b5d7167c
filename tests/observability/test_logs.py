"""The runtime's log lines: JSON objects with Elastic Common Schema field names, request id, model and digest."""

from __future__ import annotations

import datetime
import json
import re
import time
import uuid

import httpx
import yaml
from load import v2_body
from processes import Runtime, wait_until

# ECS fields the runtime may write (ECS 8.x reference, field sets base, ecs, log, service,
# process, host, http, url, event, client, error, user_agent, trace, file); custom context goes under
# `labels.*` (keyword values) or our own `mlmodel.*` namespace, never at the top level where a
# future ECS field of the same name (path, bytes, seconds...) would clash with it.
ECS_FIELDS = {
    "@timestamp", "message", "tags", "ecs.version",
    "log.level", "log.logger", "log.origin.function", "log.origin.file.name", "log.origin.file.line",
    "service.name", "service.version", "service.environment", "service.node.name",
    "process.pid", "process.thread.id", "process.thread.name", "host.name", "host.hostname",
    "http.request.method", "http.request.id", "http.request.body.bytes", "http.response.status_code",
    "http.response.body.bytes", "http.version", "url.path", "url.original", "url.query",
    "event.duration", "event.action", "event.outcome", "event.reason", "event.dataset", "event.kind", "event.category",
    "client.address", "client.ip", "client.port", "user_agent.original", "file.path", "file.size",
    "error.type", "error.message", "error.stack_trace", "error.code",
    "trace.id", "transaction.id", "span.id",
}
LEVELS = {"debug", "info", "warning", "error", "critical"}


def flatten(document: dict, prefix: str = "") -> dict:
    """ECS fields may be written nested ({"log": {"level": ...}}) or dotted ("log.level")."""
    flat = {}
    for key, value in document.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and key != "labels":
            flat.update(flatten(value, name + "."))
        elif isinstance(value, dict):
            flat.update({f"{name}.{k}": v for k, v in value.items()})
        else:
            flat[name] = value
    return flat


def test_every_line_is_an_ecs_json_object_with_request_id_model_and_digest(runtime: Runtime, repo_root) -> None:
    request_id = f"obs-{uuid.uuid4().hex}"
    with httpx.Client(base_url=runtime.url, timeout=10) as client:
        ok = client.post(f"/v2/models/{runtime.model}/infer", json=v2_body(["a fine film"]), headers={"x-request-id": request_id})
        bad = client.post(f"/v2/models/{runtime.model}/infer", content=b"{nope", headers={"content-type": "application/json"})
    assert ok.status_code == 200 and ok.headers["x-request-id"] == request_id
    assert 400 <= bad.status_code < 500
    generated_id = bad.headers["x-request-id"]
    assert generated_id  # one is made up when the client sends none

    def access_lines() -> list[dict]:
        found = [flatten(json.loads(line)) for line in runtime.json_lines()]
        ids = {line.get("http.request.id") for line in found}
        return found if {request_id, generated_id} <= ids else []

    lines = wait_until(access_lines, 10, "the access log lines of both requests")
    # Not a single line of other text: uvicorn's own lines go through the same formatter.
    other = [line for line in runtime.log().splitlines() if line.strip() and not line.startswith("{")]
    assert other == [], f"lines that are not JSON: {other[:5]}"

    digest = yaml.safe_load((repo_root / "examples" / "sentiment" / "mlmodel.yaml").read_text())["spec"]["model"]["sha256"]
    non_ecs: set[str] = set()
    for line in lines:
        stamp = datetime.datetime.fromisoformat(line["@timestamp"])
        assert stamp.utcoffset() == datetime.timedelta(0)
        assert abs(time.time() - stamp.timestamp()) < 600
        assert line["log.level"] in LEVELS
        assert isinstance(line["message"], str) and line["message"]
        assert re.fullmatch(r"\d+\.\d+\.\d+", line["ecs.version"])
        assert line["service.name"] == "mlmodel-runtime"
        assert line["labels.model"] == runtime.model
        for key, value in line.items():
            if key.startswith("labels."):
                assert isinstance(value, str), f"{key}: labels are keywords (strings), got {value!r}"
            elif key not in ECS_FIELDS and not key.startswith("mlmodel."):
                non_ecs.add(key)
    assert non_ecs == set(), f"fields that are not ECS names (put context under labels.* or mlmodel.*): {sorted(non_ecs)}"

    access = {line["http.request.id"]: line for line in lines if "http.request.id" in line}
    served, refused = access[request_id], access[generated_id]
    assert served["http.request.method"] == "POST"
    assert served["url.path"] == f"/v2/models/{runtime.model}/infer"
    assert served["http.response.status_code"] == 200
    assert isinstance(served["event.duration"], int) and served["event.duration"] > 0  # nanoseconds
    assert served["labels.digest"] == digest
    assert refused["http.response.status_code"] == bad.status_code
    # The startup lines say which artifact was loaded.
    assert any(line.get("labels.digest") == digest and "http.request.id" not in line for line in lines)
