"""``scripts/bench.py`` works: tiny runs of each mode exit 0 and print their report's lines.

Nothing here asserts a figure or times anything: the numbers depend on the machine and its load of
the moment. What is checked is the script's behaviour: which configuration it measures, that it
says so, and the lines it prints (each round, the medians, the spread of the ratios).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from tests.script_module import script_module

BENCH = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"
TIMEOUT = 120.0  # far above the seconds each run takes; only there so that a hang fails the test
_RATIO = r"[0-9]+\.[0-9]{2}x"
DEFAULT_CONFIGURATION = (
    "adapter: the default configuration: log level INFO, an access line per call (text, to a "
    "file); no metrics"
)
NO_ACCESS_LOG = (
    "adapter: --no-access-log: --log-level warning, so a success writes no access line; no metrics"
)


def spread(measure: str, concurrency: int, rounds: int, name: str = "embedded/bare") -> str:
    """The pattern of one ratio's line: its median, smallest and largest across the rounds."""
    plural = "s" if rounds > 1 else ""
    return (
        rf"^{name} {measure} at {concurrency} in flight: median {_RATIO}, min {_RATIO}, "
        rf"max {_RATIO} over {rounds} round{plural}$"
    )


@dataclass(frozen=True)
class BenchRun:
    """What one run of the script left: its exit code, its report and its stderr."""

    returncode: int
    report: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.report.splitlines()


def _run(*args: str) -> BenchRun:
    proc = subprocess.Popen(  # noqa: S603 (the project's own script, with this interpreter)
        [sys.executable, str(BENCH), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: a hung run is killed with its children
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return BenchRun(proc.returncode, out.decode(), err.decode())


@pytest.fixture(scope="module")
def side_by_side() -> BenchRun:
    """One round, one call in flight, bare and embedded only, half a second each; the adapter in
    its default configuration."""
    return _run(
        *("--seconds", "0.5", "--warmup", "0.2", "--rounds", "1"),
        *("--concurrency", "1", "--servers", "bare,embedded"),
    )


def test_side_by_side_exits_zero(side_by_side: BenchRun) -> None:
    """Every call succeeded and every server exited 0 on SIGTERM: the script says ok, exits 0."""
    assert side_by_side.returncode == 0, side_by_side.report + side_by_side.stderr
    assert side_by_side.lines[-1] == "result: ok", side_by_side.report


def test_side_by_side_prints_the_table(side_by_side: BenchRun) -> None:
    """The table has its header and a row of numbers for each server, bare's ratios 1.00x."""
    lines = side_by_side.lines
    header = lines.index("1 in flight, medians of 1 round:")
    assert lines[header + 1].split()[:4] == ["server", "calls/s", "p50", "ms"], lines[header + 1]
    assert re.fullmatch(r"bare( +[0-9.]+){4} +- +[0-9.]+ +1\.00x +1\.00x", lines[header + 2]), (
        side_by_side.report
    )
    assert re.fullmatch(
        rf"embedded( +[0-9.]+){{4}} +- +[0-9.]+ +{_RATIO} +{_RATIO}", lines[header + 3]
    ), side_by_side.report


def test_side_by_side_prints_quotable_ratios(side_by_side: BenchRun) -> None:
    """The summary says embedded/bare CPU per call and calls per second, each on its own line
    with the median, the smallest and the largest of the rounds' ratios."""
    for measure in ("CPU per call", "calls/s"):
        assert re.search(spread(measure, 1, 1), side_by_side.report, re.M), side_by_side.report


def test_side_by_side_measures_the_default_configuration(side_by_side: BenchRun) -> None:
    """Without ``--no-access-log`` the adapter runs as configured out of the box, an access line
    per call (the script counts them and would fail the run otherwise), and the report says so."""
    assert side_by_side.lines[3] == DEFAULT_CONFIGURATION, side_by_side.report
    assert side_by_side.lines[-1] == "result: ok", side_by_side.report


def test_side_by_side_prints_each_round_with_its_ratio(side_by_side: BenchRun) -> None:
    """Each round has its line: every server's calls per second and CPU per call, and the
    adapter's CPU per call as a ratio to bare's in that round."""
    assert re.search(
        rf"^round 1, 1 in flight: bare +[0-9]+/s +[0-9]+ us \| embedded +[0-9]+/s +[0-9]+ us "
        rf"{_RATIO}$",
        side_by_side.report,
        re.M,
    ), side_by_side.report


def test_no_access_log_runs_the_adapter_quiet_and_gives_the_spread_of_rounds() -> None:
    """``--no-access-log`` runs the adapter with ``--log-level warning`` and says so; over two
    rounds each round has its line and each ratio its median, smallest and largest."""
    run = _run(
        *("--no-access-log", "--seconds", "0.2", "--warmup", "0.1", "--rounds", "2"),
        *("--concurrency", "1", "--servers", "bare,embedded"),
    )
    assert run.returncode == 0, run.report + run.stderr
    assert run.lines[3] == NO_ACCESS_LOG, run.report
    for number in (1, 2):
        assert re.search(rf"^round {number}, 1 in flight: bare .* {_RATIO}$", run.report, re.M), (
            run.report
        )
    for measure in ("CPU per call", "calls/s"):
        assert re.search(spread(measure, 1, 2), run.report, re.M), run.report
    assert run.lines[-1] == "result: ok", run.report


def test_side_by_side_names_the_machine(side_by_side: BenchRun) -> None:
    """The report starts with the machine it ran on and the command that made it."""
    assert side_by_side.lines[0].startswith("machine: "), side_by_side.report
    assert side_by_side.lines[1].startswith("command: python scripts/bench.py "), (
        side_by_side.report
    )


def test_side_by_side_writes_no_traceback(side_by_side: BenchRun) -> None:
    """Neither the script nor a process it started prints a traceback."""
    assert "Traceback" not in side_by_side.stderr + side_by_side.report, side_by_side.stderr


def test_observability_mode_runs_every_variant() -> None:
    """``--observability`` runs the adapter with metrics, access lines, both and neither; the
    script checks the scrape and the access lines itself, and says ok."""
    run = _run(
        *("--observability", "--seconds", "0.2", "--warmup", "0.1", "--rounds", "1"),
        *("--concurrency", "1", "--servers", "embedded"),
    )
    assert run.returncode == 0, run.report + run.stderr
    for variant in ("metrics", "access", "both"):
        assert re.search(
            spread("CPU per call", 1, 1, name=f"embedded\\+{variant}/embedded"), run.report, re.M
        ), run.report


def test_memory_mode_reports_growth() -> None:
    """``--memory`` makes the calls, samples RSS, and prints the growth of each adapter."""
    run = _run("--memory", "1000", "--servers", "embedded")
    assert run.returncode == 0, run.report + run.stderr
    assert re.search(
        r"^embedded RSS growth over 1000 calls: [+-][0-9]+\.[0-9]%$", run.report, re.M
    ), run.report
    assert run.lines[-1] == "result: ok", run.report


def test_workers_mode_compares_the_numbers_of_workers() -> None:
    """``--workers 1,2`` runs ``serve --workers N`` for each N on a gateway over HTTP, over
    several connections: a row
    for each, the workers' CPU shares in the round's line, and the ratio 2 to 1; ok, exit 0."""
    run = _run(
        *("--workers", "1,2", "--seconds", "0.5", "--warmup", "0.2", "--rounds", "1"),
        *("--concurrency", "8"),
    )
    assert run.returncode == 0, run.report + run.stderr
    assert re.search(
        r"^round 1, 8 in flight: workers-1 .* \| workers-2 .*\(CPU [0-9]+%/[0-9]+%\)$",
        run.report,
        re.M,
    ), run.report
    lines = run.lines
    header = lines.index("8 in flight, medians of 1 round:")
    # The gateway's CPU per call has its column: workers serve from nvp-adapter gateway.
    assert re.fullmatch(
        r"workers-1( +[0-9.]+){4} +[0-9.]+ +[0-9.]+ +1\.00x +1\.00x", lines[header + 2]
    ), run.report
    assert re.fullmatch(
        rf"workers-2( +[0-9.]+){{4}} +[0-9.]+ +[0-9.]+ +{_RATIO} +{_RATIO}", lines[header + 3]
    ), run.report
    assert re.search(spread("calls/s", 8, 1, name="workers-2/workers-1"), run.report, re.M), (
        run.report
    )
    assert "Traceback" not in run.stderr + run.report, run.stderr
    assert lines[-1] == "result: ok", run.report


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    """The script as a module, for its command line."""
    with script_module(BENCH, "bench_script") as module:
        yield module


@pytest.mark.parametrize(
    "argv",
    [
        ["--seconds", "0"],
        ["--seconds", "601"],
        ["--seconds", "nan"],
        ["--warmup", "-1"],
        ["--rounds", "0"],
        ["--rounds", "51"],
        ["--concurrency", "0"],
        ["--concurrency", "1,1001"],
        ["--concurrency", "1,1"],
        ["--servers", "nginx"],
        ["--servers", "bare,bare"],
        ["--memory", "999"],
        ["--memory", "1000001"],
        ["--memory", "1000", "--time-limit", "5"],
        ["--observability", "--servers", "bare,embedded"],
        ["--observability", "--memory", "1000"],
        ["--workers", "0"],
        ["--workers", "1,9"],
        ["--workers", "2,2"],
        ["--workers", "1,2", "--servers", "embedded"],
        ["--workers", "1,2", "--memory", "1000"],
        ["--workers", "1,2", "--observability"],
        ["--observability", "--no-access-log"],
    ],
)
def test_out_of_bounds_arguments_are_usage_errors(bench: ModuleType, argv: list[str]) -> None:
    """A number out of its bounds, an unknown or repeated name, or modes that do not go together
    stop the command line with usage status 2."""
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(argv)
    assert exc.value.code == 2


def test_each_mode_has_its_default_servers(bench: ModuleType) -> None:
    """Without ``--servers``: all four side by side, the embedded adapter for observability,
    embedded and http for memory, the adapter on a gateway over HTTP for workers."""
    assert bench.parse_args([]).servers == ["bare", "embedded", "http", "https"]
    assert bench.parse_args(["--observability"]).servers == ["embedded"]
    assert bench.parse_args(["--memory", "1000"]).servers == ["embedded", "http"]
    assert bench.parse_args(["--workers", "2,1"]).servers == ["http"]


def test_the_adapter_runs_its_default_configuration_unless_told(bench: ModuleType) -> None:
    """Every mode but ``--observability`` runs the adapter with no logging flag (its default:
    an access line per call); ``--no-access-log`` gives it ``--log-level warning``. Bare, the
    baseline, never counts access lines."""
    for argv in ([], ["--memory", "1000"], ["--workers", "1,2"]):
        for setup in bench.setups_for(bench.parse_args(argv)):
            if setup.kind == "bare":
                assert not setup.access, (argv, setup)
            else:
                assert (setup.access, setup.logging) == (True, []), (argv, setup)
        quiet = bench.setups_for(bench.parse_args([*argv, "--no-access-log"]))
        for setup in quiet:
            assert not setup.access, (argv, setup)
            if setup.kind != "bare":
                assert setup.logging == ["--log-level", "warning"], (argv, setup)
    assert bench.parse_args([]).no_access_log is False


def test_observability_compares_with_both_off(bench: ModuleType) -> None:
    """``--observability``'s baseline is the adapter with neither metrics nor access lines."""
    args = bench.parse_args(["--observability"])
    setups = bench.setups_for(args)
    names = [setup.name for setup in setups]
    assert names == ["embedded", "embedded+metrics", "embedded+access", "embedded+both"]
    base = bench.baseline_of(setups[2], setups, args)
    assert (base.name, base.access, base.metrics, base.logging) == (
        "embedded",
        False,
        False,
        ["--log-level", "warning"],
    )
    assert setups[2].logging == ["--log-level", "info", "--log-format", "json"]


def test_the_spread_is_median_min_and_max(bench: ModuleType) -> None:
    """The spread line gives the median, the smallest and the largest of the rounds' ratios."""
    assert bench.spread([1.3, 1.1, 1.2]) == "median 1.20x, min 1.10x, max 1.30x over 3 rounds"
    assert bench.spread([1.5]) == "median 1.50x, min 1.50x, max 1.50x over 1 round"


def test_workers_mode_defaults(bench: ModuleType) -> None:
    """``--workers``: the fewest workers first (the base of the ratios), 32 in flight by default;
    the other modes keep 1 and 32."""
    args = bench.parse_args(["--workers", "2,1"])
    assert (args.workers, args.concurrency) == ([1, 2], [32])
    assert bench.parse_args([]).concurrency == [1, 32]
