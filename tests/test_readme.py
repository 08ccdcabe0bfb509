"""README's ready-made commands, run as written against the real process, so the docs cannot rot.

A block between ``<!-- NAME -->`` and ``<!-- /NAME -->`` in README holds a fenced ``sh`` block (the
command, for the default address) and a fenced ``text`` block (the answer it shows).
"""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import pytest

from adapter.config import DEMO_MERCHANT, GatewaySettings
from adapter.core import nvp
from tests.test_cli import Start, nvp_adapter

__all__ = ["nvp_adapter"]  # the fixture, shared with test_cli

README = Path(__file__).parent.parent / "README.md"
_FENCED = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)


def readme_block(name: str) -> dict[str, str]:
    """The fenced blocks between README's ``<!-- name -->`` markers, by their language."""
    text = README.read_text()
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    assert start in text, f"README has no {start} marker"
    assert end in text, f"README has no {end} marker"
    section = text.split(start, 1)[1].split(end, 1)[0]
    return dict(_FENCED.findall(section))


def require_curl() -> None:
    """A clear failure, never a skip, where curl is missing: the example would go unchecked."""
    if shutil.which("curl") is None:
        pytest.fail("curl is not on PATH: README's gateway example runs it; install curl")


async def test_the_readme_curl_call_of_the_gateway_answers_as_shown(nvp_adapter: Start) -> None:
    """README's `curl` CREATE_SESSION against `nvp-adapter gateway`, run as written (the default
    address replaced by the test's free port), answers as README shows: the same fields, the
    same values but the session id and version, which are new each time and of their form."""
    require_curl()
    blocks = readme_block("gateway-curl")
    command, shown = blocks["sh"], blocks["text"].strip()
    default = GatewaySettings().listen
    assert f"http://{default}/" in command
    gateway = await nvp_adapter("gateway", "--listen", "127.0.0.1:0")
    proc = await asyncio.create_subprocess_shell(
        command.replace(default, gateway.address),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert (proc.returncode, err) == (0, b""), err
    answer, expected = nvp.decode(out.strip()), nvp.decode(shown.encode())
    assert answer.keys() == expected.keys()
    fresh = {"session.id", "session.version"}
    assert {k: v for k, v in answer.items() if k not in fresh} == {
        k: v for k, v in expected.items() if k not in fresh
    }
    assert expected["merchant"] == DEMO_MERCHANT
    for fields in (answer, expected):
        assert re.fullmatch(r"SESSION0002[0-9A-Z]{20}", fields["session.id"]), fields
        assert re.fullmatch(r"[0-9a-f]{10}", fields["session.version"]), fields
