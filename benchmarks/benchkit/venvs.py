"""Separate virtual environments for the servers we compare against (their pins would fight ours)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

INSTALL_TIMEOUT_SECONDS = 1200


def ensure_venv(venv: Path, requirements: Path, log: Path) -> None:
    """Create `venv` and install `requirements` into it, unless it was done before."""
    marker = venv / ".installed-requirements"
    wanted = requirements.read_text(encoding="utf-8")
    if marker.exists() and marker.read_text(encoding="utf-8") == wanted:
        return
    print(f"setting up {venv} from {requirements.name} (once; log: {log})", file=sys.stderr)
    with open(log, "ab") as out:
        if not (venv / "bin" / "python").exists():
            subprocess.run(
                [sys.executable, "-m", "venv", str(venv)],
                check=True,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=INSTALL_TIMEOUT_SECONDS,
            )
        subprocess.run(
            [
                str(venv / "bin" / "pip"),
                "install",
                "--disable-pip-version-check",
                "-r",
                str(requirements),
            ],
            check=True,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=INSTALL_TIMEOUT_SECONDS,
        )
    marker.write_text(wanted, encoding="utf-8")
