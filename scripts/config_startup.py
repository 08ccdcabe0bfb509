"""What reading the configuration costs at start: CPU time of the import and one load, each run a
fresh process, as median and spread.

Usage: .venv/bin/python scripts/config_startup.py [--runs 20] [--source DIR]

Two figures: ``adapter.config`` imported and one file loaded (every table, TLS nested, callers by
token and by certificate), and the same after ``import adapter.cli``, the whole start before
serving. ``--source DIR`` measures another checkout's ``adapter/`` with this environment (for a
before and after: ``git archive COMMIT adapter | tar -x -C DIR``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIG = """
[server]
listen = "127.0.0.1:50051"
health_listen = "127.0.0.1:50052"
[server.tls]
cert_file = "/run/tls/tls.crt"
key_file = "/run/tls/tls.key"
client_ca_file = "/run/tls/ca.crt"
[upstream]
url = "https://test-gateway.mastercard.com"
timeout_seconds = 12.5
[merchants.TESTMERCHANT]
password = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
[merchants.OTHER]
password_env = "HOME"
[callers.checkout]
token_sha256 = "5e55101d7e57c0ffee0ddba11ab1e0005e55101d7e57c0ffee0ddba11ab1e000"
merchants = ["TESTMERCHANT"]
[callers.billing]
certificate_subject = "spiffe://cluster.local/ns/billing/sa/billing"
merchants = ["*"]
[metrics]
listen = "127.0.0.1:9464"
[log]
format = "json"
"""
MEASURE = """
import time
started = time.process_time()
{imports}
from adapter.config import load_settings
load_settings({path!r})
print(time.process_time() - started)
"""
CASES = {"adapter.config": "", "adapter.cli": "import adapter.cli"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--source", type=Path, help="put this checkout's adapter/ first")
    args = parser.parse_args()
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as config:
        config.write(CONFIG)
        config.flush()
        for name, imports in CASES.items():
            code = MEASURE.format(imports=imports, path=config.name)
            runs = sorted(
                # -c puts the working directory first on the path: the source measured.
                1000 * float(subprocess.check_output([sys.executable, "-c", code], cwd=args.source))
                for _ in range(args.runs)
            )
            print(
                f"{name:16} median {statistics.median(runs):6.1f} ms CPU, "
                f"min {runs[0]:.1f}, max {runs[-1]:.1f} ({args.runs} runs)"
            )


if __name__ == "__main__":
    main()
