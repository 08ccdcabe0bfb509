"""The example configurations in examples/ load and serve as README shows them.

Their `/run/...` files are made in a temporary folder and their addresses moved to loopback
port 0; nothing else in them changes.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc

from adapter.app import build_server
from adapter.config import load_settings
from tests.certs import server_pair

EXAMPLES = Path(__file__).parent.parent / "examples"


def provision(example: Path, folder: Path) -> Path:
    """A copy of ``example`` whose files exist under ``folder`` and whose ports are free."""
    text = example.read_text().replace('"/run/', f'"{folder}/run/')
    text = text.replace("0.0.0.0:50051", "127.0.0.1:0").replace("0.0.0.0:50052", "127.0.0.1:0")
    text = text.replace("127.0.0.1:50051", "127.0.0.1:0")
    for secret in (
        "secrets/mpgs/TEST7006259",
        "secrets/mpgs/TEST7006260",
        "secrets/callers/checkout",
    ):
        path = folder / "run" / secret
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("0123456789abcdef0123456789abcdef\n")
        path.chmod(0o600)
    tls = folder / "run" / "tls"
    tls.mkdir(parents=True)
    ca = trustme.CA()
    server_pair(ca).write(tls, "tls")
    ca.cert_pem.write_to_path(str(tls / "ca.crt"))
    copy = folder / example.name
    copy.write_text(text)
    return copy


@pytest.mark.parametrize("name", ["sidecar.toml", "shared-service.toml"])
async def test_an_example_config_serves(tmp_path: Path, name: str) -> None:
    """The example loads, starts, and its health listener answers SERVING."""
    settings = load_settings(provision(EXAMPLES / name, tmp_path))
    async with (
        build_server(settings) as server,
        grpc.aio.insecure_channel(server.health_address) as channel,
    ):
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert response.status == health_pb2.HealthCheckResponse.SERVING
