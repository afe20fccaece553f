"""Start-up: ``ferry --help`` and ``ferry verify missing.tar`` (a command that fails at once), each the
median of many runs, in ferry as a user installs it (a venv with the wheel, bytecode written by pip) and
in the development venv (an editable install).  Goal: at most 0.15 s for both, installed."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNS = 21


def _median(cmd: list[str]) -> float:
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def installed_venv(work: Path) -> Path:
    """A venv with ferry installed from a wheel of this checkout, as `pip install` or the kit does."""
    venv = work / "venv"
    stamp = venv / ".ferry-source"
    source = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout
    if stamp.exists() and stamp.read_text() == source:
        return venv
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(venv / "bin/pip"), "install", "-q", str(REPO)], check=True)
    stamp.write_text(source)
    return venv


def run(work: Path) -> dict[str, float]:
    work.mkdir(parents=True, exist_ok=True)
    venv = installed_venv(work)
    missing = str(work / "missing.tar")
    out = {}
    for label, ferry in (
        ("installed", str(venv / "bin/ferry")),
        ("dev", str(Path(sys.executable).parent / "ferry")),
    ):
        out[f"{label}_help_s"] = round(_median([ferry, "--help"]), 3)
        out[f"{label}_verify_missing_s"] = round(_median([ferry, "verify", missing]), 3)
    out["python_s"] = round(_median([sys.executable, "-c", "pass"]), 3)
    return out


if __name__ == "__main__":
    print(run(Path(os.environ.get("FERRY_BENCH_OUT", REPO / "bench/out")) / "startup-work"))
