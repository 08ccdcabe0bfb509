"""The client distribution on its own: its wheel, installed into a fresh virtual environment with
nothing but its locked dependencies, calls a running adapter and decodes a failure's details.

The wheel is built by ``scripts/build_client.py`` (which CI's lint step runs too); the environment
is made with ``python -m venv`` and gets ``requirements/client.txt`` (hash-pinned: grpcio,
protobuf, googleapis-common-protos and what they need) and the wheel, ``--no-deps``. The adapter
is a separate ``nvp-adapter serve`` process of the development environment on loopback port 0.
README's Python example ("A first call") is run there too, as written. Every step is bounded in
time.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli import Start, nvp_adapter

__all__ = ["nvp_adapter"]  # the fixture: an `nvp-adapter serve` process, killed afterwards

ROOT = Path(__file__).resolve().parents[3]
README_ADDRESS = "127.0.0.1:50051"
STEP_TIMEOUT = 300.0  # an install from an empty pip cache; far above what a step takes
CALL_TIMEOUT = 60.0

# Run by the fresh environment's python, from a folder that holds nothing else: what a service
# that installed the client alone does. Prints one JSON object.
CALLER = """
import asyncio, importlib.util, json, sys

import grpc

import nvp_adapter_client
from nvp_adapter_client import SessionServiceStub, advice, failure, session_service_pb2 as pb


async def main(target):
    seen = {
        "client": nvp_adapter_client.__file__,
        "adapter": importlib.util.find_spec("adapter") is not None,
        "grpc_status": importlib.util.find_spec("grpc_status") is not None,
    }
    async with grpc.aio.insecure_channel(target) as channel:
        stub = SessionServiceStub(channel)
        created = await stub.CreateSession(
            pb.CreateSessionRequest(merchant="TESTMERCHANT", correlation_id="fresh-venv"),
            timeout=10,
        )
        seen["session"] = created.session.id
        try:
            await stub.RetrieveSession(
                pb.RetrieveSessionRequest(
                    merchant="TESTMERCHANT", session=pb.SessionRef(id="not a session id")
                ),
                timeout=10,
            )
        except grpc.aio.AioRpcError as error:
            failed = failure(error)
            seen["code"] = failed.code.name
            seen["reason"] = failed.reason
            seen["fields"] = [v.field for v in failed.field_violations]
            seen["retry"] = advice(failed, moves_money=False).retry.name
    print(json.dumps(seen))


asyncio.run(main(sys.argv[1]))
"""


def _run(*command: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(  # noqa: S603 - this interpreter and the environment the test makes
        [str(c) for c in command],
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        cwd=cwd,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")},
        check=False,
    )
    assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a new virtual environment holding the client's wheel and its locked
    dependencies alone."""
    folder = tmp_path_factory.mktemp("fresh")
    wheel = Path(
        _run(sys.executable, ROOT / "scripts" / "build_client.py", "--out", folder / "wheels")
        .strip()
        .splitlines()[-1]
    )
    _run(sys.executable, "-m", "venv", folder / "venv")
    python = folder / "venv" / "bin" / "python"
    pip: list[str | Path] = [python, "-m", "pip", "--disable-pip-version-check", "install", "-q"]
    lock = ROOT / "requirements" / "client.txt"
    _run(*pip, "--require-hashes", "--only-binary", ":all:", "--no-deps", "-r", lock)
    _run(*pip, "--no-index", "--no-deps", wheel)
    _run(python, "-m", "pip", "--disable-pip-version-check", "check")
    return python


def test_the_fresh_environment_holds_the_client_and_its_three_dependencies(
    fresh_python: Path,
) -> None:
    """Its distributions are the client, grpcio, protobuf, googleapis-common-protos and
    grpcio's typing-extensions: no server, no grpcio-status."""
    listed = json.loads(
        _run(fresh_python, "-m", "pip", "--disable-pip-version-check", "list", "--format=json")
    )
    names = {re.sub(r"[-_.]+", "-", d["name"]).lower() for d in listed} - {"pip", "setuptools"}
    assert names == {
        "nvp-adapter-client",
        "grpcio",
        "protobuf",
        "googleapis-common-protos",
        "typing-extensions",
    }


async def _run_in(python: Path, script: Path, *args: str) -> tuple[int, str, str]:
    """Run ``script`` with ``python`` from the script's folder, bounded; its code and output."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = await asyncio.create_subprocess_exec(
        python,
        script,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=script.parent,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CALL_TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def readme_example() -> str:
    """The first ``python`` block of README's "A first call"."""
    section = (ROOT / "README.md").read_text().split("\n## A first call\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    match = re.search(r"^```python\n(.*?)^```$", section, re.M | re.S)
    assert match, "README's A first call has no python block"
    return match[1]


async def test_readme_s_python_example_runs_as_written(
    fresh_python: Path, nvp_adapter: Start, tmp_path: Path
) -> None:
    """README's example, with the client alone installed: the new session's id and version, then
    the failure's code, reason and the advice, as README says it prints them."""
    example = readme_example()
    assert README_ADDRESS in example
    adapter = await nvp_adapter("serve", "--listen", "127.0.0.1:0")
    script = tmp_path / "first_call.py"
    script.write_text(example.replace(README_ADDRESS, adapter.address))
    code, out, err = await _run_in(fresh_python, script)
    assert code == 0, err
    assert re.fullmatch(
        r"SESSION0002[0-9A-Z]{20} [0-9a-f]{10}\nPERMISSION_DENIED MERCHANT_NOT_ALLOWED NO\n", out
    ), out


async def test_a_fresh_environment_calls_the_adapter_and_decodes_a_failure(
    fresh_python: Path, nvp_adapter: Start, tmp_path: Path
) -> None:
    """CreateSession answers; RetrieveSession with a malformed id fails INVALID_ARGUMENT, decoded
    into its reason, the field to fix and the advice not to retry; the client came from the
    environment, and the server is not importable there."""
    adapter = await nvp_adapter("serve", "--listen", "127.0.0.1:0")
    script = tmp_path / "caller.py"
    script.write_text(CALLER)
    code, out, err = await _run_in(fresh_python, script, adapter.address)
    assert code == 0, err
    seen = json.loads(out)
    assert seen["client"].startswith(str(fresh_python.parent.parent))
    assert (seen["adapter"], seen["grpc_status"]) == (False, False)
    assert seen["session"].startswith("SESSION")
    assert (seen["code"], seen["reason"], seen["fields"], seen["retry"]) == (
        "INVALID_ARGUMENT",
        "INVALID_REQUEST",
        ["session.id"],
        "NO",
    )
