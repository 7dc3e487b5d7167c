"""The digest every example writes for its artifact: ARTIFACT.sha256 beside it (sha256sum's
format) and the `sha256:` field of its MLModel, so the YAML always names the artifact next to it."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path


def sha256_of(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_digest_file(artifact: Path) -> str:
    """Write ARTIFACT.sha256 beside the artifact; return the digest."""
    digest = sha256_of(artifact)
    artifact.with_name(f"{artifact.name}.sha256").write_text(
        f"{digest}  {artifact.name}\n", encoding="utf-8"
    )
    return digest


def write_manifest_digest(manifest: Path, digest: str) -> None:
    """Replace the value of the `sha256:` field, keeping the rest of the file (comments too)."""
    text = manifest.read_text(encoding="utf-8")
    updated, count = re.subn(r"(?m)^(\s*sha256:\s*)\S+", lambda m: m.group(1) + f'"{digest}"', text)
    if count != 1:
        raise SystemExit(f"{manifest}: expected exactly one sha256 field, found {count}")
    manifest.write_text(updated, encoding="utf-8")


def write_results(out: Path, example: Path, artifact: Path, digest: str, metrics: dict) -> None:
    """metrics.json in `out`, ending with the artifact's size and digest, and the example's
    mlmodel.yaml naming the digest: in place, or a copy in `out` when training wrote elsewhere
    (the committed one stays as it is)."""
    metrics = {**metrics, "artifact_bytes": artifact.stat().st_size, "sha256": digest}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    manifest = out / "mlmodel.yaml"
    if out != example:
        shutil.copyfile(example / "mlmodel.yaml", manifest)
    write_manifest_digest(manifest, digest)
    print(f"wrote {artifact} ({metrics['artifact_bytes']} bytes) sha256 {digest}")
