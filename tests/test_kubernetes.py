"""deploy/kubernetes/ holds together: the ConfigMap's TOML is one ``serve`` accepts, and the
Deployment's probes, ports, drain and mounts agree with what that TOML sets.

The TOML is loaded by the adapter's own loader, with the files it names made under a temporary
folder in place of the Secret's mount path; nothing else in it changes.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapter.config import Overrides, Settings, load_settings
from adapter.config.environment import config_file, read_environment
from tests.dockerfile import read_image

MANIFESTS = Path(__file__).parent.parent / "deploy" / "kubernetes"
SIDECAR = "nvp-adapter"


def _manifest(name: str) -> dict[str, Any]:
    document = yaml.safe_load((MANIFESTS / name).read_text())
    assert isinstance(document, dict), name
    return document


DEPLOYMENT = _manifest("deployment.yaml")
CONFIG_MAP = _manifest("configmap.yaml")
POD: dict[str, Any] = DEPLOYMENT["spec"]["template"]["spec"]
ADAPTER: dict[str, Any] = next(c for c in POD["containers"] if c["name"] == SIDECAR)
VOLUMES: dict[str, dict[str, Any]] = {volume["name"]: volume for volume in POD["volumes"]}


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}


def _mounts(kind: str) -> dict[str, dict[str, Any]]:
    """The sidecar's mounts of volumes of ``kind`` (``secret``, ``configMap``), by mount path."""
    return {
        mount["mountPath"]: VOLUMES[mount["name"]]
        for mount in ADAPTER["volumeMounts"]
        if kind in VOLUMES[mount["name"]]
    }


def _config_text() -> str:
    """The TOML the sidecar reads: the ConfigMap key that NVP_ADAPTER_CONFIG names."""
    named = config_file(None, _env(ADAPTER))
    assert named is not None, "the sidecar's environment names no config file"
    path = Path(named)
    volume = _mounts("configMap")[str(path.parent)]
    assert volume["configMap"]["name"] == CONFIG_MAP["metadata"]["name"]
    text = CONFIG_MAP["data"][path.name]
    assert isinstance(text, str)
    return text


def _load(folder: Path, overrides: Overrides | None = None) -> Settings:
    """The ConfigMap's TOML through ``load_settings``, each mounted Secret file made in ``folder``.

    Every ``password_file`` must lie in a Secret the sidecar mounts, or it would not exist in the
    pod; the file is made there with the Secret's ``defaultMode``.
    """
    text = _config_text()
    secrets = _mounts("secret")
    for mount_path in secrets:
        text = text.replace(f'"{mount_path}/', f'"{folder}{mount_path}/')
    for merchant, table in tomllib.loads(_config_text())["merchants"].items():
        password_file = Path(table["password_file"])
        assert str(password_file.parent) in secrets, f"{merchant}: {password_file} is not mounted"
        made = folder / password_file.relative_to("/")
        made.parent.mkdir(parents=True, exist_ok=True)
        made.write_text("0123456789abcdef0123456789abcdef")
        made.chmod(secrets[str(password_file.parent)]["secret"]["defaultMode"])
    config = folder / "adapter.toml"
    config.write_text(text)
    return load_settings(config, overrides=overrides)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The ConfigMap's settings; no NVP_ADAPTER_* variable of the test's own environment."""
    for name in os.environ:
        if name.startswith("NVP_ADAPTER_"):
            monkeypatch.delenv(name)
    return _load(tmp_path)


def test_the_config_map_is_a_sidecar_configuration_serve_accepts(settings: Settings) -> None:
    """The TOML loads as ``serve`` loads it, with the API on loopback and a real gateway."""
    assert settings.server.address.is_loopback
    assert not settings.upstream.is_embedded


def test_the_image_environment_changes_nothing_the_config_map_sets(
    settings: Settings, tmp_path: Path
) -> None:
    """The image's ENV and the container's env rank above the file: with them the sidecar runs
    exactly the ConfigMap's settings, so no value of the TOML is silently overridden."""
    environment = {**read_image().env, **_env(ADAPTER)}
    in_the_pod = _load(tmp_path / "pod", read_environment(environment))
    assert in_the_pod == settings


@pytest.mark.parametrize("probe", ["startupProbe", "readinessProbe", "livenessProbe"])
def test_each_probe_asks_grpc_health_on_health_listen(settings: Settings, probe: str) -> None:
    """Each probe is a native gRPC probe on health_listen's port, for the overall service ("")."""
    health = settings.server.health_address
    assert health is not None
    assert ADAPTER[probe]["grpc"] == {"port": health.port}


def test_drain_lasts_one_readiness_period(settings: Settings) -> None:
    """server.drain_seconds equals the readiness probe's period, as CONTRACT §7 asks."""
    assert settings.server.drain_seconds == ADAPTER["readinessProbe"]["periodSeconds"]


def test_the_pod_grace_period_covers_drain_and_grace(settings: Settings) -> None:
    """Kubernetes does not kill the sidecar before its drain and grace period are over."""
    needed = settings.server.drain_seconds + settings.server.grace_seconds
    assert POD["terminationGracePeriodSeconds"] >= needed


def test_declared_ports_are_the_ones_configured(settings: Settings) -> None:
    """The container ports and the scrape annotation name the ports the TOML listens on."""
    health = settings.server.health_address
    metrics = settings.metrics.address
    assert health is not None
    assert metrics is not None
    ports = {port["name"]: port["containerPort"] for port in ADAPTER["ports"]}
    assert ports == {"grpc-health": health.port, "metrics": metrics.port}
    annotations = DEPLOYMENT["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(metrics.port)


def test_the_sidecar_runs_locked_down() -> None:
    """Non-root as the image's own user, read-only root file system, no privilege escalation,
    no capability."""
    uid, gid = (int(part) for part in read_image().user.split(":"))
    assert ADAPTER["securityContext"] == {
        "runAsUser": uid,
        "runAsGroup": gid,
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert all(mount["readOnly"] for mount in ADAPTER["volumeMounts"])
    assert "requests" in ADAPTER["resources"]
    assert "limits" in ADAPTER["resources"]
