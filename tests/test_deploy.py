"""
The Kubernetes manifests in deploy/kubernetes/: valid against the
Kubernetes schemas (kubernetes-validate, offline: the schemas ship in the
package), and consistent with the gateway configuration they carry.  The
install script itself runs in C{make deploy-check} (CI), into a scratch venv.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agwtx.config.loader import loadConfig

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))

# CPython only (setup.cfg): its jsonschema needs rpds-py, which has no wheel
# for Debian's PyPy 3.9.
kubernetesValidate = pytest.importorskip("kubernetes_validate")
yaml = pytest.importorskip("yaml")


def _documents() -> dict[str, dict[str, Any]]:
    docs = {}
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_manifest_validates_against_the_kubernetes_schema(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetesValidate.validate(doc, kubernetesValidate.latest_version(), strict=True)


def test_the_validator_rejects_a_broken_manifest() -> None:
    deployment = _documents()["Deployment"]
    broken = {**deployment, "spec": {**deployment["spec"], "replicas": "three"}}
    with pytest.raises(kubernetesValidate.ValidationError):
        kubernetesValidate.validate(broken, kubernetesValidate.latest_version(), strict=True)


def test_manifests_match_the_configuration_they_carry(tmp_path: Path) -> None:
    docs = _documents()
    assert set(docs) == {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"}
    ini = tmp_path / "gw.ini"
    # The admin token comes from the Secret the Deployment mounts; stand in a file for it.
    (container,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    (tokenMount,) = [m for m in container["volumeMounts"] if m["name"] == "admin-token"]
    tokenPath = f"{tokenMount['mountPath']}/admin.token"
    token = tmp_path / "admin.token"
    token.write_text("0123456789abcdef0123456789abcdef\n")
    token.chmod(0o440)
    ini.write_text(docs["ConfigMap"]["data"]["gw.ini"].replace(tokenPath, str(token)))
    config = loadConfig(str(ini))
    gateway = config.gateway
    assert gateway.watchConfig
    assert gateway.adminToken == b"0123456789abcdef0123456789abcdef"
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    # Kubernetes waits long enough for the lame duck and the drain.
    assert pod["terminationGracePeriodSeconds"] >= gateway.lameDuckPeriod + gateway.shutdownGracePeriod
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probe = container["readinessProbe"]["httpGet"]
    assert probe["path"] == "/ready"
    assert gateway.admin == f"tcp:{ports[probe['port']]}"
    assert {fp.port for fp in config.frontendPorts.values()} == {ports["http"]}
    # Mounted as a directory, so updates arrive (a subPath mount never changes).
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "config"]
    assert "subPath" not in mount and container["args"] == ["--config", f"{mount['mountPath']}/gw.ini"]
    service = docs["Service"]["spec"]
    assert service["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == service["selector"]
