"""``scripts/soak.py`` in a short form: it runs both processes, passes, and says so."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

SOAK = Path(__file__).resolve().parent.parent / "scripts" / "soak.py"
TIMEOUT = 120.0  # far above the few seconds it takes; only there so a hang fails the test


async def test_short_soak_passes() -> None:
    """3,000 calls with 64 in flight: no failed call, RSS bounded, both processes exit 0."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SOAK),
        "--calls",
        "3000",
        "--concurrency",
        "64",
        "--warmup",
        "1000",
        "--max-rss-growth",
        "1.0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own process group: a hung run is killed with its children
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    report = out.decode()
    assert proc.returncode == 0, report + err.decode()
    lines = report.splitlines()
    assert "calls: 3000 (64 in flight, warm-up 1000)" in lines
    assert "errors: 0" in lines
    assert "exit codes: adapter 0, gateway 0" in lines
    assert "result: PASS" in lines
    assert "Traceback" not in err.decode()
