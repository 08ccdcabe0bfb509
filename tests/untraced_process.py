"""A child process for test_otel: one traced call through a real adapter, then a JSON report.

The report says what the gateway on loopback saw of ``traceparent``, which ``opentelemetry``
modules the process holds afterwards, and the adapter's WARNING lines. With ``--block`` every
``opentelemetry`` import fails, as it does where the ``otel`` extra is not installed.

    python -m tests.untraced_process [--block]
"""

from __future__ import annotations

import asyncio
import importlib.abc
import importlib.machinery
import json
import logging
import sys
from collections.abc import Sequence
from types import MappingProxyType, ModuleType

import grpc
from aiohttp import web

from adapter._proto.mpgs.gateway.v1 import session_service_pb2 as pb
from adapter._proto.mpgs.gateway.v1 import session_service_pb2_grpc
from adapter.app import build_server
from adapter.config import MerchantCredentials, ServerSettings, Settings, UpstreamSettings
from adapter.core.redaction import Secret

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
MERCHANT = "TESTMERCHANT"
SUCCESS = (
    "merchant=TESTMERCHANT&result=SUCCESS&session.id=SESSION0002AAAAAAAAAAAAAAAAAAAA"
    "&session.updateStatus=NO_UPDATE&session.version=0123456789"
)


class BlockOpenTelemetry(importlib.abc.MetaPathFinder):
    """Makes every ``opentelemetry`` import fail as a missing package does."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] == "opentelemetry":
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def traced_call() -> dict[str, object]:
    traceparents: list[list[str]] = []

    async def gateway(request: web.Request) -> web.Response:
        traceparents.append(request.headers.getall("traceparent", []))
        return web.Response(body=SUCCESS)

    app = web.Application()
    app.router.add_post("/api/nvp/version/{version}", gateway)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    settings = Settings(
        server=ServerSettings(listen="127.0.0.1:0"),
        upstream=UpstreamSettings(url=url),
        merchants=MappingProxyType({MERCHANT: MerchantCredentials(MERCHANT, Secret("p" * 32))}),
    )
    try:
        async with (
            build_server(settings) as server,
            grpc.aio.insecure_channel(server.address) as channel,
        ):
            stub = session_service_pb2_grpc.SessionServiceStub(channel)
            response = await stub.CreateSession(
                pb.CreateSessionRequest(merchant=MERCHANT),
                timeout=5,
                metadata=(("traceparent", TRACEPARENT),),
            )
    finally:
        await runner.cleanup()
    return {"result": pb.Result.Name(response.result), "traceparents": traceparents}


def main(argv: Sequence[str]) -> None:
    if "--block" in argv:
        sys.meta_path.insert(0, BlockOpenTelemetry())
    warnings = Lines()
    logging.getLogger().addHandler(warnings)
    report = asyncio.run(traced_call())
    report["opentelemetry_modules"] = sorted(
        name for name in sys.modules if name.partition(".")[0] == "opentelemetry"
    )
    report["warnings"] = warnings.lines
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
