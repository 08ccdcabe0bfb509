"""``scripts/checkout_flow.py`` run as a user runs it: in a process of its own, on a live adapter.

The flow is create → update with an order → the card → retrieve → pay (or authorize and capture);
the script prints what a backend checks and records, and exits 0 only when all of it holds, or 1
with the failed call's rich status or the check that did not hold.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc

from adapter._proto.mpgs.gateway.v1 import payment_service_pb2 as pay
from adapter._proto.mpgs.gateway.v1 import payment_service_pb2_grpc, session_service_pb2_grpc
from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter.app import build_server
from adapter.config import CallerSettings, token_digest
from tests.conftest import MERCHANT, make_settings

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "checkout_flow.py"
SCRIPT_SECONDS = 60.0  # a bound, far above the second or two it takes
KEEP = re.compile(r"^Keep for the pay step: session (\S+), version (\S+)$", re.MULTILINE)


@dataclass(frozen=True)
class Run:
    """How the script's process ended."""

    returncode: int
    stdout: str
    stderr: str


async def run_script(*args: str) -> Run:
    """Run the script with ``args`` in a process of its own, bounded in time."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), SCRIPT_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Run(process.returncode, stdout.decode(), stderr.decode())


async def test_the_flow_against_a_running_adapter_leaves_the_order_in_the_session() -> None:
    """Exit 0, every check ok, and the session and version it says to keep hold the order."""
    async with (
        build_server(make_settings()) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        run = await run_script(
            "--target",
            server.address,
            "--amount",
            "1234.5",
            "--currency",
            "EUR",
            "--order-id",
            "order-42",
        )
        assert run.returncode == 0, run.stdout + run.stderr
        kept = KEEP.search(run.stdout)
        assert kept is not None, run.stdout
        session_id, version = kept.groups()
        held = await session_service_pb2_grpc.SessionServiceStub(channel).RetrieveSession(
            pb.RetrieveSessionRequest(merchant=MERCHANT, session=pb.SessionRef(id=session_id)),
            timeout=5,
        )
    assert "FAIL" not in run.stdout
    assert run.stdout.rstrip().endswith("checkout flow: ok")
    assert (held.session.version, held.order.currency, held.order.id) == (
        version,
        "EUR",
        "order-42",
    )


async def test_with_no_target_it_runs_against_an_adapter_of_its_own() -> None:
    """With no --target the script starts the adapter itself, on the embedded gateway."""
    run = await run_script()
    assert run.returncode == 0, run.stdout + run.stderr
    assert "started in this process, embedded gateway" in run.stdout
    assert run.stdout.rstrip().endswith("checkout flow: ok")


async def test_a_failed_call_exits_1_and_prints_its_rich_details() -> None:
    """An amount with four decimals: INVALID_ARGUMENT, its ErrorInfo and BadRequest on stderr."""
    async with build_server(make_settings()) as server:
        run = await run_script("--target", server.address, "--amount", "1.2345")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "checkout flow: ok" not in run.stdout
    lines = run.stderr.splitlines()
    assert lines[0].startswith("UpdateSession failed: INVALID_ARGUMENT: ")
    assert any(
        line.startswith("  google.rpc.ErrorInfo: ") and 'reason: "INVALID_REQUEST"' in line
        for line in lines
    ), run.stderr
    assert any(
        line.startswith("  google.rpc.BadRequest: ") and 'field: "order.amount"' in line
        for line in lines
    ), run.stderr


async def test_a_bearer_token_from_token_file_goes_with_every_call(tmp_path: Path) -> None:
    """Against an adapter that authenticates callers, --token-file makes all three calls pass."""
    token = "checkout-flow-token"
    caller = CallerSettings("checkout", frozenset({MERCHANT}), token_sha256=token_digest(token))
    settings = dataclasses.replace(make_settings(), callers={"checkout": caller})
    token_file = tmp_path / "token"
    token_file.write_text(f"{token}\n")
    async with build_server(settings) as server:
        run = await run_script("--target", server.address, "--token-file", str(token_file))
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.rstrip().endswith("checkout flow: ok")


async def test_connection_flags_without_a_target_are_a_usage_error() -> None:
    """The adapter the script starts itself has no TLS and no callers: the flags are refused."""
    run = await run_script("--token-file", "token")
    assert run.returncode == 2
    assert "need --target" in run.stderr


async def test_authorize_then_capture_with_a_lost_answer_found_again() -> None:
    """--authorize --lose-answer: the gateway authorizes and loses the answer; the adapter finds
    it (reconciled), the retry with the same ids gets it again (replayed), and the order holds one
    authorization and one capture, read back from the adapter the script talked to."""
    async with (
        build_server(make_settings()) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        run = await run_script(
            "--target", server.address, "--authorize", "--lose-answer", "--order-id", "order-7"
        )
        assert run.returncode == 0, run.stdout + run.stderr
        held = await payment_service_pb2_grpc.PaymentServiceStub(channel).RetrieveOrder(
            pay.RetrieveOrderRequest(merchant=MERCHANT, order=pay.OrderRef(id="order-7")),
            timeout=5,
        )
    assert "(nvp-adapter-outcome: reconciled)" in run.stdout
    assert "(nvp-adapter-outcome: replayed)" in run.stdout
    assert [t.transaction.type for t in held.transactions] == [
        pay.TRANSACTION_TYPE_AUTHORIZATION,
        pay.TRANSACTION_TYPE_CAPTURE,
    ]
    assert (held.total_authorized_amount, held.total_captured_amount) == ("10.50", "10.50")
    assert "5123450000000008" not in run.stdout + run.stderr


async def test_a_declined_card_is_recorded_and_fails_the_flow() -> None:
    """The test card's 05/39 expiry is a decline: the call is OK (a transaction exists), and the
    backend's check on the result fails: exit 1, FAIL printed."""
    run = await run_script("--expiry", "05/39")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "5. Pay             transaction pay-1 PAYMENT 10.50 USD  FAILURE DECLINED" in run.stdout
    assert "  FAIL result FAILURE" in run.stdout
    assert "checkout flow: ok" not in run.stdout
