"""The manifests agree with the code: names from screener/names.py, thresholds from SCALING, settings fields.

A renamed consumer, stream or setting, or a threshold changed on one side only, fails here instead of
silently breaking autoscaling in the cluster.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from screener.config import ENV_PREFIX, Settings
from screener.names import CONSUMERS, STREAMS
from screener.runtime.run import FUNCTIONS
from screener.scale_advice import SCALING
from tests.deploy.manifests import (
    KNATIVE_SERVING,
    MANIFEST_IMAGE,
    PROFILES,
    REPO,
    SECRET_NAME,
    Document,
    all_documents,
    by_kind,
    containers,
    load_file,
    render_profile,
)

DOCUMENTS = all_documents()
SCALED_OBJECTS = {d.name: d for d in by_kind("ScaledObject")}
DEPLOYMENTS = {d.name: d for d in by_kind("Deployment")}
KNATIVE_SERVICES = {d.name: d for d in by_kind("Service", KNATIVE_SERVING)}
(CONFIG_MAP,) = by_kind("ConfigMap")
# Settings whose values are secrets: they must come from a Secret, never be written in a manifest.
SECRET_SETTINGS = {"SCREENER_REDIS_URL", "SCREENER_POSTGRES_DSN", "SCREENER_JWT_SECRET"}


def trigger(doc: Document) -> dict[str, Any]:
    """Return the single nats-jetstream trigger's metadata of a ScaledObject."""
    (only,) = doc.body["spec"]["triggers"]
    assert only["type"] == "nats-jetstream"
    return dict(only["metadata"])


def test_every_consumer_has_a_scaled_object_of_the_same_name() -> None:
    assert set(SCALED_OBJECTS) == set(CONSUMERS)
    for name in CONSUMERS:
        assert (REPO / "keda" / f"{name}.yaml").is_file()


@pytest.mark.parametrize("function", sorted(CONSUMERS))
def test_scaled_object_watches_the_consumer_named_in_names_py(function: str) -> None:
    spec = CONSUMERS[function]
    metadata = trigger(SCALED_OBJECTS[function])
    assert metadata["stream"] == spec.stream.name
    assert metadata["consumer"] == spec.durable
    assert metadata["account"] == "$G"
    assert spec.stream in STREAMS


@pytest.mark.parametrize("function", sorted(CONSUMERS))
def test_scaled_object_thresholds_and_bounds_match_the_scaling_table(function: str) -> None:
    policy = SCALING[function]
    doc = SCALED_OBJECTS[function]
    spec = doc.body["spec"]
    metadata = trigger(doc)
    assert int(metadata["lagThreshold"]) == policy.lag_threshold
    assert int(metadata["activationLagThreshold"]) == policy.activation_lag_threshold
    assert spec["minReplicaCount"] == policy.min_replicas
    assert spec["maxReplicaCount"] == policy.max_replicas
    assert spec["pollingInterval"] == policy.polling_interval_seconds
    assert spec["cooldownPeriod"] == policy.cooldown_period_seconds


@pytest.mark.parametrize("function", sorted(CONSUMERS))
def test_scaled_object_targets_the_deployment_that_runs_the_function(function: str) -> None:
    doc = SCALED_OBJECTS[function]
    target = doc.body["spec"]["scaleTargetRef"]["name"]
    deployment = DEPLOYMENTS[target]
    assert deployment.path == doc.path
    assert "replicas" not in deployment.body["spec"], "KEDA's HPA owns the replica count"
    (container,) = containers(deployment.body)
    assert container["args"] == ["run", function]
    assert function in FUNCTIONS


def test_keda_reads_the_monitoring_endpoint_the_application_is_configured_with() -> None:
    monitor = urlparse(CONFIG_MAP.body["data"]["SCREENER_NATS_MONITOR_URL"])
    for doc in SCALED_OBJECTS.values():
        metadata = trigger(doc)
        assert metadata["natsServerMonitoringEndpoint"] == monitor.netloc
        assert metadata.get("useHttps", "false") == ("true" if monitor.scheme == "https" else "false")


def test_the_latency_critical_functions_never_scale_to_zero() -> None:
    assert SCALING["calculator"].min_replicas >= 1
    assert SCALING["rules"].min_replicas >= 1


@pytest.mark.parametrize("name", sorted(CONSUMERS))
def test_worker_probes_use_the_health_port_it_is_configured_with(name: str) -> None:
    (container,) = containers(DEPLOYMENTS[name].body)
    env = {e["name"]: e for e in container.get("env", [])}
    port = int(env["SCREENER_HEALTH_PORT"]["value"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["health"] == port
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}


def test_gateway_probes_are_its_health_endpoints() -> None:
    (container,) = containers(KNATIVE_SERVICES["gateway"].body)
    assert container["args"] == ["gateway"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    env = {e["name"]: e for e in container["env"]}
    assert env["SCREENER_GATEWAY_PORT"]["value"] == str(container["ports"][0]["containerPort"])
    assert env["SCREENER_GATEWAY_HOST"]["value"] == "0.0.0.0"


def test_gateway_is_websocket_friendly() -> None:
    spec = KNATIVE_SERVICES["gateway"].body["spec"]["template"]
    annotations = spec["metadata"]["annotations"]
    assert int(annotations["autoscaling.knative.dev/min-scale"]) >= 1
    assert spec["spec"]["timeoutSeconds"] >= 600
    assert spec["spec"]["containerConcurrency"] >= 100


def test_knative_functions_are_http_workers_fed_from_their_stream() -> None:
    functions = sorted(p.stem for p in (REPO / "knative" / "functions").glob("*.yaml") if p.stem != "kustomization")
    assert functions == ["notifier"]
    for function in functions:
        docs = load_file(REPO / "knative" / "functions" / f"{function}.yaml")
        (service,) = [d for d in docs if d.kind == "Service"]
        (container,) = containers(service.body)
        assert container["args"] == ["run", function, "--http"]
        (subscription,) = [d for d in docs if d.kind == "Subscription"]
        assert subscription.body["spec"]["subscriber"]["ref"]["name"] == service.name
        channel_name = subscription.body["spec"]["channel"]["name"]
        (channel,) = [d for d in docs if d.kind == "NatsJetStreamChannel" and d.name == channel_name]
        (source,) = channel.body["spec"]["stream"]["config"]["sources"]
        assert source["name"] == CONSUMERS[function].stream.name
        assert source["filterSubject"] == CONSUMERS[function].filter_subject


def test_every_screener_variable_in_the_manifests_is_a_setting() -> None:
    fields = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    named = set(CONFIG_MAP.body["data"])
    for doc in DOCUMENTS:
        for container in containers(doc.body):
            named.update(e["name"] for e in container.get("env", []))
    screener = {n for n in named if n.startswith(ENV_PREFIX)}
    assert screener, "no SCREENER_ variable found"
    assert screener <= fields, f"not settings: {sorted(screener - fields)}"


def test_secrets_are_referenced_never_written() -> None:
    assert not SECRET_SETTINGS & set(CONFIG_MAP.body["data"])
    for doc in DOCUMENTS:
        for container in containers(doc.body):
            for env in container.get("env", []):
                if env["name"] in SECRET_SETTINGS:
                    assert "value" not in env, f"{doc}: {env['name']} is written in the manifest"
                    assert env["valueFrom"]["secretKeyRef"]["name"] == SECRET_NAME
    for path in {d.path for d in DOCUMENTS}:
        text = path.read_text()
        assert not re.search(r"(?i)(password|secret)\s*:\s*\S+://", text), f"{path} holds a credential"
        assert "kind: Secret\n" not in text, f"{path} defines a Secret; reference an existing one"


def test_every_container_is_hardened_and_bounded() -> None:
    for doc in DOCUMENTS:
        pod = doc.body.get("spec", {}).get("template", {}).get("spec")
        if pod is None:
            continue
        assert pod["securityContext"]["runAsNonRoot"] is True, str(doc)
        assert pod["automountServiceAccountToken"] is False, str(doc)
        for container in containers(doc.body):
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, str(doc)
            assert security["readOnlyRootFilesystem"] is True, str(doc)
            assert security["capabilities"]["drop"] == ["ALL"], str(doc)
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), str(doc)
            assert "memory" in container["resources"]["limits"], str(doc)


def deployed_functions(objects: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Return, per function, how it is deployed in a rendered profile ("keda" and/or "knative")."""
    ways: dict[str, list[str]] = {name: [] for name in CONSUMERS}
    scaled = {o["spec"]["scaleTargetRef"]["name"] for o in objects if o["kind"] == "ScaledObject"}
    for o in objects:
        for container in containers(o):
            args = container.get("args", [])
            if args[:1] != ["run"]:
                continue
            if o["kind"] == "Deployment":
                assert o["metadata"]["name"] in scaled, f"worker {o['metadata']['name']} has no ScaledObject"
                ways[args[1]].append("keda")
            elif o["apiVersion"] == KNATIVE_SERVING:
                assert "--http" in args
                ways[args[1]].append("knative")
    return ways


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_profile_deploys_every_function_exactly_one_way(profile: str) -> None:
    objects = render_profile(PROFILES[profile])
    ways = deployed_functions(objects)
    assert all(len(w) == 1 for w in ways.values()), ways
    expected_http = {"http-notifier": {"notifier"}, "jetstream": set()}[profile]
    assert {f for f, w in ways.items() if w == ["knative"]} == expected_http
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names)), "an object appears twice"
    assert {"gateway", "collector", "migrate"} <= {n for _, n in names}


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_profile_renders_the_same_with_kubectl_kustomize(profile: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the profile was resolved by the test's own resolver only")
    result = subprocess.run(
        [kubectl, "kustomize", str(PROFILES[profile])], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    rendered = [o for o in yaml.safe_load_all(result.stdout) if o]
    ours = render_profile(PROFILES[profile])
    key = lambda o: (o["apiVersion"], o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, rendered)) == sorted(map(key, ours))
    with (PROFILES[profile] / "kustomization.yaml").open() as handle:
        (image,) = yaml.safe_load(handle)["images"]
    images = {container["image"] for o in rendered for container in containers(o)}
    assert images == {f"{image['newName']}:{image['newTag']}"}
    assert image["name"] == MANIFEST_IMAGE.split(":")[0]


def test_the_scaling_table_in_the_docs_matches_the_code() -> None:
    text = (REPO / "docs" / "deploy.md").read_text()
    for function, policy in SCALING.items():
        spec = policy.consumer
        row = re.search(rf"^\| {function} \| `{spec.stream.name}`/`{spec.durable}` \|([^\n]*)$", text, re.MULTILINE)
        assert row is not None, f"docs/deploy.md has no scaling row for {function}"
        cells = [c.strip() for c in row.group(1).split("|")]
        assert cells[:5] == [
            str(policy.min_replicas),
            str(policy.max_replicas),
            str(policy.lag_threshold),
            str(policy.activation_lag_threshold),
            f"{policy.polling_interval_seconds} s",
        ], f"docs/deploy.md's row for {function} disagrees with SCALING"
