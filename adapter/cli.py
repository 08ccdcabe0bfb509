"""The ``nvp-adapter`` command: the only place with argv, printing and exit codes.

::

    nvp-adapter serve   [--config FILE] [--listen HOST:PORT] [--upstream URL|embedded]
                        [--workers N] [--loop auto|uvloop|asyncio]
    nvp-adapter gateway [--config FILE] [--listen HOST:PORT] [--loop auto|uvloop|asyncio]
    nvp-adapter config check [--config FILE]
    nvp-adapter health  [--config FILE] [--address ADDRESS] [--timeout SECONDS]
    nvp-adapter --version

Every command reads its settings alike: the file (``--config``, else ``NVP_ADAPTER_CONFIG``), the
``NVP_ADAPTER_<TABLE>_<KEY>`` variables over it, the flags over both. A user's mistake (bad
configuration, port in use, unreadable file) prints one line and exits 2; there is never a
traceback for it. ``health`` exits 0 for SERVING and 1 for anything else, a configuration it
cannot read included: never 2, which Docker's HEALTHCHECK reserves.

``serve`` runs on uvloop's event loop where uvloop is installed (a dependency on Linux and
macOS), else on asyncio's; ``--loop asyncio`` is the way back. ``gateway`` runs on asyncio's
unless ``--loop uvloop`` is given: its count of ``accept()`` failures for want of descriptors
is written against asyncio's loop, which reports them to its exception handler. Its HTTPS face
works on both (the test suite runs its in-process tests on either). The loop is a flag, not a
setting: it changes how fast the process runs, never what it does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from adapter import version
from adapter.app import build_server, check
from adapter.config import (
    DEMO_MERCHANT,
    LOG_FORMATS,
    LOG_LEVELS,
    MAX_WORKERS,
    ListenAddress,
    LogSettings,
    Settings,
    load_server_settings,
    load_settings,
    parse_listen,
)
from adapter.config.effective import effective_toml
from adapter.config.environment import CONFIG_VARIABLE, config_file, read_environment
from adapter.core.errors import ConfigError
from adapter.embedded.standalone import StandaloneGateway
from adapter.net.addresses import format_address
from adapter.observability.logs import configure_logging, json_line
from adapter.probe import dial_target, probe, probe_target
from adapter.server import AdapterServer, serve
from adapter.server.listeners import listen_error
from adapter.server.signals import stop_and_reload_signals
from adapter.server.workers import READY, Supervisor, watch_supervisor

__all__ = ["loop_factory", "main"]

EXIT_CONFIG = 2
FIRST_CALL_SCRIPT = "scripts/first_call.py"
EXIT_UNHEALTHY = 1
HEALTH_TIMEOUT_SECONDS = 2.0
HEALTH_TIMEOUT_RANGE = (0.1, 60.0)
CONFIG_COMMANDS = {
    "check": "load and check the settings as serve would; print them, secrets as ***",
}
"""``nvp-adapter config``'s subcommands and their help."""
LOOPS = ("auto", "uvloop", "asyncio")
"""``--loop``: the command's default (below), uvloop or fail, asyncio's own."""
AUTO_LOOP = {"serve": "uvloop", "gateway": "asyncio"}
"""What ``--loop auto`` means per command; uvloop only where it is installed."""
log = logging.getLogger("adapter.cli")
_T = TypeVar("_T")


class _Parser(argparse.ArgumentParser):
    """argparse, with every usage mistake as the one line every other mistake gets."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"nvp-adapter: error: {message} (see nvp-adapter --help)\n")


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a log level: use one of {', '.join(LOG_LEVELS)}"
        )
    return level


def _timeout(text: str) -> float:
    low, high = HEALTH_TIMEOUT_RANGE
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not low <= seconds <= high:  # NaN fails too
        raise argparse.ArgumentTypeError(f"{text!r}: give {low:g} to {high:g} seconds")
    return seconds


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _address(text: str) -> ListenAddress:
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="nvp-adapter",
        description="gRPC front for the Mastercard Payment Gateway Services NVP API.",
        epilog=f"Settings: --config FILE (or {CONFIG_VARIABLE}), then NVP_ADAPTER_<TABLE>_<KEY> "
        "variables over the file, then the flags over both.",
    )
    parser.add_argument("--version", action="version", version=f"nvp-adapter {version()}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    serve_cmd = commands.add_parser("serve", help="run the gRPC server")
    gateway_cmd = commands.add_parser("gateway", help="run the embedded gateway alone, over HTTP")
    config_cmd = commands.add_parser("config", help="about the configuration")
    # Not required: argparse would say "arguments are required: COMMAND"; main() names them.
    check_cmd = config_cmd.add_subparsers(
        dest="config_command", metavar="COMMAND", parser_class=_Parser
    ).add_parser(
        "check",
        help=CONFIG_COMMANDS["check"],
    )
    health_cmd = commands.add_parser(
        "health", help="ask a running server's grpc.health.v1: exit 0 when SERVING, 1 otherwise"
    )
    for command in (serve_cmd, gateway_cmd, check_cmd, health_cmd):
        command.add_argument(
            "--config", metavar="FILE", help=f"TOML configuration file (else ${CONFIG_VARIABLE})"
        )
    for command in (serve_cmd, gateway_cmd):
        command.add_argument("--listen", metavar="HOST:PORT", help="address to listen on")
        command.add_argument(
            "--log-level",
            type=_log_level,
            metavar="LEVEL",
            help=f"one of {', '.join(LOG_LEVELS)} (any case); over [log] level",
        )
        command.add_argument(
            "--log-format",
            choices=LOG_FORMATS,
            help="text (the default) or json, one object a line; over [log] format",
        )
        command.add_argument(
            "--loop",
            choices=LOOPS,
            default="auto",
            help="event loop: auto (the default: uvloop where installed for serve, asyncio for "
            "gateway), uvloop, or asyncio",
        )
    serve_cmd.add_argument(
        "--upstream", metavar="URL|embedded", help="gateway base URL, or 'embedded'"
    )
    serve_cmd.add_argument(
        "--workers",
        type=_integer,
        metavar="N",
        help=f"processes serving the port together, 1 to {MAX_WORKERS}; over [server] workers",
    )
    # Set by `serve --workers N` for each worker it starts, never by hand.
    serve_cmd.add_argument("--worker", type=_integer, help=argparse.SUPPRESS)
    serve_cmd.add_argument("--health-listen", help=argparse.SUPPRESS)
    health_cmd.add_argument(
        "--address",
        type=_address,
        metavar="ADDRESS",
        help="HOST:PORT or unix:PATH (default: server.health_listen, else server.listen; "
        "a wildcard host is checked on loopback)",
    )
    health_cmd.add_argument(
        "--timeout",
        type=_timeout,
        default=HEALTH_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help=f"how long to wait for the answer, {HEALTH_TIMEOUT_RANGE[0]:g} to "
        f"{HEALTH_TIMEOUT_RANGE[1]:g} (default {HEALTH_TIMEOUT_SECONDS:g})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the console script; exits with the command's status."""
    args = _parser().parse_args(argv)
    if args.command == "config" and args.config_command is None:
        print(
            f"nvp-adapter config: choose a subcommand: {', '.join(CONFIG_COMMANDS)}",
            file=sys.stderr,
        )
        sys.exit(EXIT_CONFIG)
    log_level = getattr(args, "log_level", None)
    # Until the settings are read, warnings from reading them go out at the flag's level, as
    # text unless the flag (or, once read, the variable) asks for JSON.
    configure_logging(LogSettings(level=log_level or "INFO", format=_log_format(args) or "text"))
    if args.command == "health":
        sys.exit(asyncio.run(_health(args.config, args.address, args.timeout)))
    # The form of the error line, should there be one: serve's and gateway's follow [log] format
    # as far as it is known when the error comes (the flag, the variable, then the settings).
    form = _log_format(args)
    try:
        path = config_file(args.config, os.environ)
        overrides = read_environment(os.environ)
        if args.command in AUTO_LOOP and form is None:
            form = str(overrides.tables.get("log", {}).get("format", "text"))
            if form == "json":
                configure_logging(LogSettings(level=log_level or "INFO", format=form))
        if args.command == "config":
            settings = load_settings(path, overrides=overrides)
            configure_logging(settings.log)
            asyncio.run(check(settings))
            print(effective_toml(settings), end="")
            return
        log_flags = {"log_level": log_level, "log_format": args.log_format}
        if args.command == "serve":
            settings = load_settings(
                path,
                listen=args.listen,
                health_listen=args.health_listen,
                workers=args.workers,
                upstream=args.upstream,
                overrides=overrides,
                **log_flags,
            )
            form = settings.log.format
            configure_logging(settings.log, worker=args.worker)
            loop = _auto("serve", args.loop)
            if args.worker is not None:
                run_on(loop, _serve_worker(settings))
            elif settings.server.workers > 1:  # the supervisor only waits: asyncio's own loop
                sys.exit(asyncio.run(_supervise(settings, _worker_arguments(path, args))))
            else:
                run_on(loop, _serve(settings))
        else:
            settings = load_settings(
                path, gateway_listen=args.listen, overrides=overrides, for_gateway=True, **log_flags
            )
            form = settings.log.format
            configure_logging(settings.log)
            run_on(_auto("gateway", args.loop), _run_gateway(settings))
    except ConfigError as exc:
        line = f"nvp-adapter: error: {exc}"
        print(json_line(line, level=logging.ERROR) if form == "json" else line, file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    except KeyboardInterrupt:  # a signal before the handlers were installed
        sys.exit(130)


def _log_format(args: argparse.Namespace) -> str | None:
    """``--log-format`` where the command has it (serve, gateway), else None."""
    return getattr(args, "log_format", None)


def _auto(command: str, choice: str) -> str:
    """``--loop`` with ``auto`` replaced by the command's default; ``uvloop`` stays ``auto`` so
    that it falls back where uvloop is not installed."""
    if choice != "auto" or AUTO_LOOP[command] == "uvloop":
        return choice
    return AUTO_LOOP[command]


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes the event loop ``--loop`` asks for; None for asyncio's own.

    Raises ``ConfigError`` for ``uvloop`` when uvloop is not installed; ``auto`` then falls back.
    """
    if choice == "asyncio":
        return None
    try:
        import uvloop  # noqa: PLC0415 (optional: absent on Windows, and --loop asyncio needs none)
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("--loop uvloop: uvloop is not installed") from None
        return None
    return uvloop.new_event_loop


def run_on(choice: str, main: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run(main)`` on the event loop ``--loop`` asks for."""
    try:
        factory = loop_factory(choice)
    except ConfigError:
        main.close()  # never started: no "coroutine was never awaited" warning
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        loop = runner.get_loop()
        log.debug("event loop: %s.%s", type(loop).__module__, type(loop).__qualname__)
        return runner.run(main)


async def _health(config: str | None, address: ListenAddress | None, seconds: float) -> int:
    """One line about what the server answered; the exit status: 0 SERVING, 1 anything else."""
    try:
        if address is not None:
            target = dial_target(address)
        else:
            path = config_file(config, os.environ)
            overrides = read_environment(os.environ)
            target = probe_target(load_server_settings(path, overrides=overrides))
    except ConfigError as exc:
        print(f"nvp-adapter: error: {exc}", file=sys.stderr)
        return EXIT_UNHEALTHY
    result = await probe(target, within=seconds)
    if result.serving:
        print(result)
        return 0
    print(f"nvp-adapter: {result}", file=sys.stderr)
    return EXIT_UNHEALTHY


async def _serve(settings: Settings) -> None:
    await serve(build_server(settings), _on_ready)


def _on_ready(server: AdapterServer) -> None:
    _warn_if_embedded(server.settings)
    _print_first_call(server.settings, server.address)


def _warn_if_embedded(settings: Settings) -> None:
    if not settings.upstream.is_embedded:
        return
    # One worker only: the settings refuse server.workers > 1 with the embedded gateway.
    log.warning(
        "serving from the embedded gateway, an in-process stand-in with its own accounts: "
        "no call reaches a real payment gateway (set upstream.url to use one)"
    )


async def _serve_worker(settings: Settings) -> None:
    """One worker of ``serve --workers N``: says ``ready`` to its supervisor, nothing else."""

    def ready(_: AdapterServer) -> None:
        with contextlib.suppress(BrokenPipeError):  # the supervisor is gone: stdin says so too
            sys.stdout.buffer.write(READY)
            sys.stdout.flush()

    watch_supervisor()
    await serve(build_server(settings), ready)


def _worker_arguments(path: str | None, args: argparse.Namespace) -> list[str]:
    """``serve``'s arguments for each worker: the same sources, the supervisor's count."""
    arguments = [] if path is None else ["--config", path]
    for flag, value in (
        ("--upstream", args.upstream),
        ("--log-level", args.log_level),
        ("--log-format", args.log_format),
        ("--loop", args.loop),
    ):
        if value is not None:
            arguments += [flag, value]
    return arguments


async def _supervise(settings: Settings, arguments: list[str]) -> int:
    supervisor = Supervisor(settings, [*arguments, "--workers", str(settings.server.workers)])
    supervisor.reserve()

    def ready() -> None:
        _warn_if_embedded(settings)
        _print_first_call(settings, supervisor.address)

    return await supervisor.run(ready)


def _print_first_call(settings: Settings, listening: str) -> None:
    upstream = "embedded gateway" if settings.upstream.is_embedded else settings.upstream.url
    merchant = (
        DEMO_MERCHANT
        if DEMO_MERCHANT in settings.merchants
        else next(iter(settings.merchants), DEMO_MERCHANT)
    )
    address = settings.server.address
    grpcurl = ["grpcurl"]
    first_call = [f".venv/bin/python {FIRST_CALL_SCRIPT}", f"--target {listening}"]
    if settings.server.tls is None:
        grpcurl.append("-plaintext")
    else:
        grpcurl.append("-cacert CA.pem")
        first_call.append("--ca-file CA.pem")
        if settings.server.tls.client_ca_file is not None:
            grpcurl.append("-cert CLIENT.pem -key CLIENT.key")
            first_call.append("--cert-file CLIENT.pem --key-file CLIENT.key")
    if settings.callers:
        grpcurl.append("-H 'authorization: Bearer <token>'")
        first_call.append("--token-file TOKEN_FILE")
    grpcurl.append(f'-d \'{{"merchant": "{merchant}"}}\'')
    grpcurl.append(f"-unix {address.path}" if address.path is not None else listening)
    first_call.append(f"--merchant {merchant}")
    # The Python hint only where it can be followed: from a checkout, not from the image.
    python = (
        f"or with Python (this repository's .venv):\n  {' '.join(first_call)}\n"
        if Path(FIRST_CALL_SCRIPT).is_file()
        else ""
    )
    workers = settings.server.workers
    processes = f"; {workers} workers" if workers > 1 else ""
    banner = f"nvp-adapter listening on {listening} (upstream: {upstream}{processes})"
    call = f"{' '.join(grpcurl)} mpgs.gateway.v1.SessionService/CreateSession"
    if settings.log.format == "json":
        fields = {"address": listening, "upstream": upstream, "grpcurl": call}
        if python:
            fields["python"] = " ".join(first_call)
        print(json_line(banner, fields), flush=True)
        return
    # Scripts read the first line as it is: `nvp-adapter listening on HOST:PORT (...)`.
    print(
        f"{banner}\n"
        f"First call, with grpcurl:\n"
        f"  {call}\n"
        f"{python}"
        f"Stop with Ctrl-C or SIGTERM; SIGHUP reloads secrets and certificates.",
        flush=True,
    )


async def _run_gateway(settings: Settings) -> None:
    listen = settings.gateway.listen  # --listen over [gateway] listen
    address = parse_listen(listen)
    gateway = StandaloneGateway(settings, address.host, address.port)
    try:
        await gateway.start()
    except OSError as exc:
        raise listen_error("gateway.listen", address, exc) from None
    stopping = asyncio.Event()
    try:
        with stop_and_reload_signals(stopping.set, gateway.reload):
            line = _gateway_start_line(gateway)
            if settings.log.format == "json":
                where = format_address(gateway.host, gateway.port)
                line = json_line(line, {"address": where, "url": gateway.url})
            print(line, flush=True)
            await stopping.wait()
    finally:
        await gateway.aclose()


def _gateway_start_line(running: StandaloneGateway) -> str:
    merchants = ", ".join(
        merchant if password is not None else f"{merchant} (certificate)"
        for merchant, password in running.accounts.items()
    )
    certificates = "; client certificates asked for" if running.asks_for_client_cert else ""
    return f"embedded gateway listening on {running.url} (merchants: {merchants}){certificates}"
