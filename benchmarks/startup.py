"""Start-up time of the `xvla` command: wall time from process start to exit, median of ``--repeats`` runs.

    python benchmarks/startup.py                 # --help, info, the light import and the full import
    python benchmarks/startup.py --repeats 10

`xvla --help` and `xvla info` import neither torch nor transformers (targets: 1 s and 2 s); the full
import (``xvla.XVLAPolicy``) is shown for comparison: every command that runs a model pays it.
Each timing is a fresh interpreter; after the opening one of a row the file-system cache is warm.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")


def wall(command: list[str], repeats: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5, help="runs per row (the median is shown)")
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "smoke")
        wall([py, "-m", "xvla.cli", "smoke", f"--output={ckpt}"], 1)
        rows = [
            ("xvla --help", [py, "-m", "xvla.cli", "--help"], 1.0),
            ("xvla info CHECKPOINT", [py, "-m", "xvla.cli", "info", ckpt], 2.0),
            ("python -c 'import xvla'", [py, "-c", "import xvla"], None),
            ("python -c 'import xvla; xvla.XVLAPolicy'", [py, "-c", "import xvla; xvla.XVLAPolicy"], None),
        ]
        print(f"{'command':<44}{'median s':>10}{'min s':>8}{'max s':>8}{'target s':>10}")
        for name, command, target in rows:
            times = wall(command, args.repeats)
            shown = f"{target:.1f}" if target else "-"
            print(
                f"{name:<44}{statistics.median(times):>10.2f}{min(times):>8.2f}{max(times):>8.2f}{shown:>10}"
            )
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
