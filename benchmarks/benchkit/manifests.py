"""Copies of an example's MLModel for a benchmark to serve with other settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def example_manifest(
    example: Path,
    folder: Path,
    name: str,
    *,
    batching: dict[str, Any] | None = None,
    spec: dict[str, Any] | None = None,
) -> Path:
    """``example``/mlmodel.yaml written to ``folder``/``name``.yaml, readable by `mlmodel serve`
    from there: its artifact path made absolute, ``batching`` merged into spec.batching and
    ``spec`` into spec."""
    manifest = yaml.safe_load((example / "mlmodel.yaml").read_text(encoding="utf-8"))
    model = manifest["spec"]["model"]
    if "://" not in model["uri"]:
        model["uri"] = str((example / model["uri"]).resolve())
    if batching:
        manifest["spec"]["batching"] = {**manifest["spec"].get("batching", {}), **batching}
    manifest["spec"].update(spec or {})
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    return path
