"""The compose file and Kubernetes manifests: valid YAML with the fields that matter,
and the configs they mount pass the program's own validation.

Syntax and key fields only: no Docker engine or cluster runs them here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from archiver.config.settings import load_settings
from tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"


def _documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def _by_kind() -> dict[str, dict[str, Any]]:
    return {
        document["kind"]: document
        for path in sorted(KUBERNETES.glob("*.yaml"))
        for document in _documents(path)
    }


def _pod_spec(kind: str) -> dict[str, Any]:
    template = _by_kind()[kind]["spec"]
    if kind == "CronJob":
        template = template["jobTemplate"]["spec"]
    spec: dict[str, Any] = template["template"]["spec"]
    return spec


@pytest.mark.parametrize("path", sorted(KUBERNETES.glob("*.yaml")), ids=lambda path: path.name)
def test_kubernetes_manifest_is_valid_yaml_with_kind_and_name(path: Path) -> None:
    """Each manifest parses and names its apiVersion, kind and metadata.name."""
    documents = _documents(path)
    assert documents
    for document in documents:
        assert {"apiVersion", "kind", "metadata"} <= document.keys()
        assert document["metadata"]["name"].startswith("c66-archiver")


@pytest.mark.parametrize("kind", ["Deployment", "CronJob"])
def test_pods_run_non_root_read_only_without_capabilities(kind: str) -> None:
    """runAsNonRoot, a read-only root filesystem, every capability dropped, no escalation."""
    spec = _pod_spec(kind)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 65532
    (container,) = spec["containers"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert {"/config", "/data", "/tmp"} <= mounts


def test_deployment_probes_use_the_health_endpoints() -> None:
    """Liveness on /livez, readiness on /readyz, on the port [http] listens on."""
    (container,) = _pod_spec("Deployment")["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["ports"] == [{"name": "http", "containerPort": 9466}]
    assert _by_kind()["Deployment"]["spec"]["replicas"] == 1


def test_cronjob_runs_one_pass_and_never_overlaps() -> None:
    """The CronJob runs --sync-now with concurrencyPolicy Forbid."""
    cronjob = _by_kind()["CronJob"]
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = _pod_spec("CronJob")["containers"]
    assert container["args"] == ["--sync-now"]


def test_kubernetes_config_validates_and_reads_the_mounted_secret(tmp_path: Path) -> None:
    """The ConfigMap's config.toml passes the program's validation; the token path is the
    Secret's mount."""
    config = tmp_path / "config.toml"
    config.write_text(_by_kind()["ConfigMap"]["data"]["config.toml"])
    settings = load_settings(config)
    assert str(settings.api.token_file) == "/run/secrets/c66-archiver/api-token"
    assert settings.http is not None
    assert settings.http.listen == "0.0.0.0:9466"
    assert "api-token" in _by_kind()["Secret"]["stringData"]


def test_compose_file_runs_the_daemon_locally_and_with_s3() -> None:
    """Two services: the default with a local volume, the `s3` profile with AWS keys."""
    (compose,) = _documents(DEPLOY / "docker-compose.yml")
    services = compose["services"]
    assert set(services) == {"archiver", "archiver-s3"}
    assert "profiles" not in services["archiver"]
    assert services["archiver-s3"]["profiles"] == ["s3"]
    assert set(services["archiver-s3"]["environment"]) == {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    }
    for service in services.values():
        assert service["secrets"] == ["c66_api_token"]
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        assert any(volume.endswith(":/config/config.toml:ro") for volume in service["volumes"])


@pytest.mark.parametrize("name", ["config.local.toml", "config.s3.toml"])
def test_compose_configs_validate(name: str) -> None:
    """The configs compose mounts pass validation and read the token from the Docker secret."""
    settings = load_settings(DEPLOY / "docker" / name)
    assert str(settings.api.token_file) == "/run/secrets/c66_api_token"
    assert str(settings.state.path).startswith("/data/")
    assert settings.storage[0].type == ("s3" if "s3" in name else "local")
