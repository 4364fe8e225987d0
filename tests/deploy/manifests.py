"""Load the deployment manifests and resolve the kustomize profiles, for the offline deployment tests."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFEST_DIRS = (REPO / "deploy" / "base", REPO / "keda", REPO / "knative", REPO / "knative" / "functions")
SCHEMAS = REPO / "deploy" / "schemas"
PROFILES = {
    "jetstream": REPO / "deploy" / "overlays" / "jetstream",
    "http-notifier": REPO / "deploy" / "overlays" / "http-notifier",
}
# The image every committed manifest names; overlays and Terraform substitute the real one.
MANIFEST_IMAGE = "screener:0.1.0"
SECRET_NAME = "screener-secrets"

KNATIVE_SERVING = "serving.knative.dev/v1"
CUSTOM_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    (KNATIVE_SERVING, "Service"),
    ("messaging.knative.dev/v1alpha1", "NatsJetStreamChannel"),
    ("messaging.knative.dev/v1", "Subscription"),
}


@dataclass(frozen=True)
class Document:
    """One Kubernetes object and the file it comes from."""

    path: Path
    index: int
    body: dict[str, Any]

    @property
    def api_version(self) -> str:
        """Return the object's apiVersion."""
        return str(self.body["apiVersion"])

    @property
    def kind(self) -> str:
        """Return the object's kind."""
        return str(self.body["kind"])

    @property
    def name(self) -> str:
        """Return the object's name."""
        return str(self.body["metadata"]["name"])

    @property
    def is_custom(self) -> bool:
        """Return whether the kind is a CRD's (not validated by kubernetes-validate)."""
        return (self.api_version, self.kind) in CUSTOM_KINDS

    def __str__(self) -> str:
        return f"{self.path.relative_to(REPO)}#{self.index} {self.kind}/{self.name}"


def manifest_files() -> list[Path]:
    """Return every manifest file (kustomization files excluded)."""
    files: list[Path] = []
    for folder in MANIFEST_DIRS:
        files.extend(p for p in sorted(folder.glob("*.yaml")) if p.name != "kustomization.yaml")
    return files


def load_file(path: Path) -> list[Document]:
    """Return the objects of one (multi-document) YAML file."""
    with path.open() as handle:
        bodies = [body for body in yaml.safe_load_all(handle) if body is not None]
    return [Document(path, i, body) for i, body in enumerate(bodies)]


def all_documents() -> list[Document]:
    """Return every object of every manifest file."""
    return [doc for path in manifest_files() for doc in load_file(path)]


def by_kind(kind: str, api_version: str | None = None) -> list[Document]:
    """Return every object of ``kind`` (and ``api_version`` when given)."""
    return [d for d in all_documents() if d.kind == kind and (api_version is None or d.api_version == api_version)]


def containers(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield the containers of a Deployment, Job or Knative Service."""
    spec = body.get("spec", {}).get("template", {}).get("spec", {})
    yield from spec.get("containers", [])
    yield from spec.get("initContainers", [])


def render_profile(folder: Path) -> list[dict[str, Any]]:
    """Resolve a kustomization as ``kubectl kustomize`` does for the features our profiles use.

    Supported: ``resources`` (files and folders with a kustomization), ``patches`` whose patch is a
    ``$patch: delete`` of the target, and ``images`` (name -> newName:newTag). Anything else fails
    loudly, so a profile cannot silently use a feature this resolver ignores.
    """
    with (folder / "kustomization.yaml").open() as handle:
        kustomization = yaml.safe_load(handle)
    allowed = {"apiVersion", "kind", "resources", "patches", "images"}
    unknown = set(kustomization) - allowed
    if unknown:
        raise AssertionError(f"{folder}: kustomization fields {sorted(unknown)} are not understood by the test")
    objects: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        target = (folder / resource).resolve()
        if target.is_dir():
            objects.extend(render_profile(target))
        else:
            objects.extend(copy.deepcopy(d.body) for d in load_file(target))
    for patch in kustomization.get("patches", []):
        body = yaml.safe_load(patch["patch"])
        if body.get("$patch") != "delete":
            raise AssertionError(f"{folder}: only $patch: delete patches are understood by the test")
        target = patch["target"]
        before = len(objects)
        objects = [o for o in objects if not (o["kind"] == target["kind"] and o["metadata"]["name"] == target["name"])]
        if len(objects) != before - 1:
            raise AssertionError(f"{folder}: the delete patch of {target} matched {before - len(objects)} objects")
    for image in kustomization.get("images", []):
        replacement = f"{image.get('newName', image['name'])}:{image['newTag']}"
        for o in objects:
            for container in containers(o):
                if container["image"].rsplit(":", 1)[0] == image["name"]:
                    container["image"] = replacement
    return objects
