"""An example model retrained by its own train.py on fewer rows: a candidate that mostly, not
always, agrees with the committed one (shadow and canary tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support.cluster import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples"


def retrain(example: str, limit: int, folder: Path) -> Path:
    """examples/EXAMPLE/train.py --limit LIMIT into `folder`, with an mlmodel.yaml naming the
    new artifact's digest beside it; returns that file."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, str(EXAMPLES / example / "train.py"), "--limit", str(limit),
         "--output-dir", str(folder)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    sha256 = (folder / "model.joblib.sha256").read_text().split()[0]
    manifest = (EXAMPLES / example / "mlmodel.yaml").read_text()
    original = (EXAMPLES / example / "model.joblib.sha256").read_text().split()[0]
    (folder / "mlmodel.yaml").write_text(manifest.replace(original, sha256))
    return folder / "mlmodel.yaml"


def digest(artifact: Path) -> str:
    return artifact.with_name(artifact.name + ".sha256").read_text().split()[0]
