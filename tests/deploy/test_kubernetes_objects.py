"""Every manifest validates offline: core kinds with kubernetes-validate (strict), CRDs against their schemas.

The CRD schemas (KEDA's ScaledObject and TriggerAuthentication, Knative Serving's Service) are copies
of ../shared/schemas kept in deploy/schemas, so CI validates from the repository alone. They are made
strict here the way the API server's field validation is: an object with declared properties and no
``x-kubernetes-preserve-unknown-fields`` rejects any other field, so a misspelt field fails.
"""

from __future__ import annotations

import copy
import filecmp
from functools import cache
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from tests.deploy.manifests import CUSTOM_KINDS, REPO, SCHEMAS, Document, all_documents, manifest_files

# The newest Kubernetes the installed kubernetes-validate bundles (1.37 with kubernetes-validate 1.37).
K8S_VERSION = latest_version()
CRD_FILES = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCHEMAS / "keda" / "keda.sh_scaledobjects.yaml",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): SCHEMAS / "keda" / "keda.sh_triggerauthentications.yaml",
    ("serving.knative.dev/v1", "Service"): SCHEMAS / "knative" / "serving.knative.dev_services.yaml",
}
# eventing-natss's channel and Knative Eventing's Subscription have no schema in ../shared/schemas:
# their required structure is checked by hand below.
HAND_CHECKED = CUSTOM_KINDS - set(CRD_FILES)

DOCUMENTS = all_documents()
CORE = [d for d in DOCUMENTS if not d.is_custom]
WITH_CRD = [d for d in DOCUMENTS if (d.api_version, d.kind) in CRD_FILES]


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """Return ``schema`` with ``additionalProperties: false`` on every closed object."""
    result = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(result)
    return result


@cache
def crd_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    """Return a strict validator for the served version of a CRD."""
    with CRD_FILES[(api_version, kind)].open() as handle:
        crd = yaml.safe_load(handle)
    group, version = api_version.split("/")
    assert crd["spec"]["group"] == group
    assert crd["spec"]["names"]["kind"] == kind
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v.get("served")]
    return jsonschema.Draft7Validator(strict(served["schema"]["openAPIV3Schema"]))


def test_there_are_manifests_of_every_expected_kind() -> None:
    kinds = {(d.api_version, d.kind) for d in DOCUMENTS}
    assert {
        ("apps/v1", "Deployment"),
        ("keda.sh/v1alpha1", "ScaledObject"),
        ("serving.knative.dev/v1", "Service"),
    } <= kinds
    assert len(manifest_files()) >= 10


def test_every_kind_is_validated_one_way_or_another() -> None:
    for doc in DOCUMENTS:
        assert (
            not doc.is_custom or (doc.api_version, doc.kind) in CRD_FILES or (doc.api_version, doc.kind) in HAND_CHECKED
        )


@pytest.mark.parametrize("doc", CORE, ids=str)
def test_core_object_validates_strictly_with_kubernetes_validate(doc: Document) -> None:
    try:
        kubernetes_validate.validate(doc.body, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{doc}: {exc.message} at {'.'.join(str(p) for p in exc.path)}")


@pytest.mark.parametrize("doc", WITH_CRD, ids=str)
def test_custom_resource_validates_against_its_crd_schema(doc: Document) -> None:
    errors = sorted(crd_validator(doc.api_version, doc.kind).iter_errors(doc.body), key=lambda e: list(e.path))
    assert not errors, f"{doc}: " + "; ".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_strict_crd_validation_rejects_a_misspelt_field() -> None:
    (scaled,) = [d for d in WITH_CRD if d.kind == "ScaledObject" and d.name == "calculator"]
    body = copy.deepcopy(scaled.body)
    body["spec"]["minReplicas"] = body["spec"].pop("minReplicaCount")
    assert list(crd_validator(scaled.api_version, scaled.kind).iter_errors(body))


def test_strict_crd_validation_rejects_a_misspelt_knative_field() -> None:
    (gateway,) = [d for d in WITH_CRD if d.kind == "Service" and d.name == "gateway"]
    body = copy.deepcopy(gateway.body)
    body["spec"]["template"]["spec"]["containerConcurency"] = 10
    assert list(crd_validator(gateway.api_version, gateway.kind).iter_errors(body))


def test_strict_core_validation_rejects_a_misspelt_field() -> None:
    (deployment,) = [d for d in CORE if d.kind == "Deployment" and d.name == "calculator"]
    body = copy.deepcopy(deployment.body)
    body["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(body, K8S_VERSION, strict=True)


@pytest.mark.parametrize("doc", [d for d in DOCUMENTS if d.kind == "NatsJetStreamChannel"], ids=str)
def test_jetstream_channel_has_a_stream_config_and_dead_letter_path(doc: Document) -> None:
    spec = doc.body["spec"]
    assert set(spec) <= {"stream", "consumerConfigTemplate", "delivery", "subscribers"}
    assert set(spec["stream"]["config"]) <= {
        "additionalSubjects", "retention", "maxConsumers", "maxMsgs", "maxBytes", "discard", "maxAge",
        "maxMsgSize", "storage", "replicas", "noAck", "duplicateWindow", "placement", "mirror", "sources",
    }  # fmt: skip
    if doc.name.endswith("dead-letters"):
        return
    assert spec["delivery"]["deadLetterSink"]["ref"]["kind"] == "NatsJetStreamChannel"


@pytest.mark.parametrize("doc", [d for d in DOCUMENTS if d.kind == "Subscription"], ids=str)
def test_subscription_names_its_channel_subscriber_and_dead_letter_sink(doc: Document) -> None:
    spec = doc.body["spec"]
    assert set(spec) <= {"channel", "subscriber", "reply", "delivery"}
    assert spec["channel"]["kind"] == "NatsJetStreamChannel"
    assert spec["subscriber"]["ref"]["apiVersion"] == "serving.knative.dev/v1"
    assert spec["delivery"]["deadLetterSink"]["ref"]["name"]
    channels = {d.name for d in DOCUMENTS if d.kind == "NatsJetStreamChannel"}
    services = {d.name for d in DOCUMENTS if d.kind == "Service" and d.api_version == "serving.knative.dev/v1"}
    assert spec["channel"]["name"] in channels
    assert spec["subscriber"]["ref"]["name"] in services
    assert spec["delivery"]["deadLetterSink"]["ref"]["name"] in channels
    if "reply" in spec:
        assert spec["reply"]["ref"]["name"] in channels


def test_schema_copies_match_the_shared_ones_when_shared_is_present() -> None:
    shared = REPO.parent / "shared" / "schemas"
    if not shared.is_dir():
        pytest.skip(f"{shared} is not beside the repository")
    for path in CRD_FILES.values():
        original = shared / path.relative_to(SCHEMAS)
        assert filecmp.cmp(path, original, shallow=False), f"{path} differs from {original}"


def test_every_manifest_names_a_namespace_and_the_placeholder_image() -> None:
    for doc in DOCUMENTS:
        if doc.kind != "Namespace":
            assert doc.body["metadata"].get("namespace") == "screener", str(doc)
        for container in doc.body.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            assert container["image"] == "screener:0.1.0", str(doc)
