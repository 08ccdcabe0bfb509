"""How `nvp-adapter gateway` reads the configuration it shares with `serve`."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

import pytest

from adapter.config import load_settings
from adapter.core.errors import ConfigError
from tests.test_cli import COMMAND, START_TIMEOUT

CERTIFICATE_ONLY = "[merchants.CERTM]\n[merchants.PWM]\npassword = 'secret'\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "shared.toml"
    path.write_text(text)
    return path


def test_the_gateway_accepts_a_merchant_with_no_password(tmp_path: Path) -> None:
    """For the gateway a merchant table with no password is an account taken by certificate."""
    settings = load_settings(write(tmp_path, CERTIFICATE_ONLY), for_gateway=True)
    assert settings.merchants["CERTM"].password is None


def test_the_adapter_still_needs_a_client_certificate_for_it(tmp_path: Path) -> None:
    """The same file for `serve`, with no upstream.client_cert_file, is a configuration error."""
    with pytest.raises(ConfigError, match=r"merchants\.CERTM: no password"):
        load_settings(write(tmp_path, CERTIFICATE_ONLY))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def start_line(*args: str) -> str:
    """Start `nvp-adapter gateway ARGS`, return the line it prints first, and stop it."""
    proc = await asyncio.create_subprocess_exec(
        *COMMAND, "gateway", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        return (await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)).decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 15)


async def test_gateway_listens_where_the_config_says(tmp_path: Path) -> None:
    """With no --listen flag, `gateway` listens on [gateway] listen."""
    port = free_port()
    config = write(tmp_path, f"[gateway]\nlisten = '127.0.0.1:{port}'\n")
    line = await start_line("--config", str(config))
    assert line.startswith(f"embedded gateway listening on http://127.0.0.1:{port}/")


async def test_the_listen_flag_overrides_the_config(tmp_path: Path) -> None:
    """--listen wins over [gateway] listen."""
    config = write(tmp_path, f"[gateway]\nlisten = '127.0.0.1:{free_port()}'\n")
    port = free_port()
    line = await start_line("--config", str(config), "--listen", f"127.0.0.1:{port}")
    assert line.startswith(f"embedded gateway listening on http://127.0.0.1:{port}/")
