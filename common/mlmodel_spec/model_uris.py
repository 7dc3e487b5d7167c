"""Artifact URIs that name a file in a volume the operator mounts into the runtime pod.

``pvc://CLAIM/PATH`` is a file in a PersistentVolumeClaim; ``oci://REGISTRY/REPO:TAG[#PATH]`` (or
``@sha256:DIGEST``) a file in an OCI image mounted as an image volume (``model.joblib``, or
``model.onnx`` for ONNX, when no ``#PATH`` is given). The CRD's rule, the Deployment builder and
the runtime all read them here, so the volume, where it is mounted and the file the runtime opens
agree by construction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

# The pod volume holding the model, and where the runtime container mounts it (read-only).
MODEL_VOLUME = "model"
MODEL_MOUNT_DIR = "/var/run/mlmodel/model"
# What a cluster needs to mount an oci:// model (KEP-4639; the ImageVolume feature gate is GA in
# 1.36). Without the gate the API server silently drops image volumes from pod templates.
IMAGE_VOLUME_REQUIREMENTS = (
    "image volumes need Kubernetes 1.35 or later (on 1.31-1.34, the ImageVolume feature gate "
    "enabled on the API server and every kubelet) and a container runtime that mounts them "
    "(containerd 2.1 or later, CRI-O 1.31 or later)"
)
# The file an oci:// URI without #PATH names, per spec.model.format.
DEFAULT_IMAGE_FILES = {"sklearn": "model.joblib", "onnx": "model.onnx"}

# No backslash anywhere: these go verbatim into a CEL string literal in the CRD.
# A path segment that is never "." or "..": the file stays inside the volume.
_SEGMENT = r"([^ /.][^ /]*|[.][^ /.][^ /]*|[.][.][^ /]+)"
VOLUME_PATH_PATTERN = rf"{_SEGMENT}(/{_SEGMENT})*"
# A PersistentVolumeClaim's name: a DNS-1123 subdomain.
CLAIM_PATTERN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
# registry[:port]/repository with a tag, a digest or both (the distribution reference grammar,
# without the short names Docker expands: the registry is always spelled out).
_DIGEST = r"@sha256:[a-f0-9]{64}"
IMAGE_PATTERN = (
    r"[a-zA-Z0-9]([-a-zA-Z0-9.]*[a-zA-Z0-9])?(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)+"
    rf"(:[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}({_DIGEST})?|{_DIGEST})"
)
PVC_URI_PATTERN = rf"pvc://{CLAIM_PATTERN}/{VOLUME_PATH_PATTERN}"
OCI_URI_PATTERN = rf"oci://{IMAGE_PATTERN}(#{VOLUME_PATH_PATTERN})?"

_PVC = re.compile(rf"^pvc://(?P<claim>{CLAIM_PATTERN})/(?P<path>{VOLUME_PATH_PATTERN})$")
_OCI = re.compile(rf"^oci://(?P<image>{IMAGE_PATTERN})(#(?P<path>{VOLUME_PATH_PATTERN}))?$")


@dataclass(frozen=True)
class ClaimVolume:
    """pvc://CLAIM/PATH: the claim is mounted read-only; the artifact is PATH inside it."""

    claim: str
    path: str

    def describe(self) -> str:
        return f"PersistentVolumeClaim {self.claim}"


@dataclass(frozen=True)
class ImageVolume:
    """oci://REFERENCE[#PATH]: the image is mounted as an image volume; the artifact is PATH in it."""

    reference: str
    path: str

    def describe(self) -> str:
        return f"image volume {self.reference}"


MountedVolume = ClaimVolume | ImageVolume


def is_mounted_uri(uri: str) -> bool:
    """Whether the URI names a volume to mount (pvc:// or oci://), well-formed or not."""
    return uri.startswith(("pvc://", "oci://"))


def parse_mounted(uri: str, model_format: str = "sklearn") -> MountedVolume | None:
    """The volume a pvc:// or oci:// URI names, or None for any other URI or a malformed one."""
    if match := _PVC.match(uri):
        return ClaimVolume(match["claim"], match["path"])
    if match := _OCI.match(uri):
        return ImageVolume(match["image"], match["path"] or DEFAULT_IMAGE_FILES[model_format])
    return None


def mounted_file(volume: MountedVolume, mount_dir: str = MODEL_MOUNT_DIR) -> PurePosixPath:
    """Where the runtime finds the artifact of a volume mounted at ``mount_dir``."""
    return PurePosixPath(mount_dir) / volume.path
