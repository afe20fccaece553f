"""make demo's command: the whole pipeline on the embedded sample, checked by a real registry."""

from __future__ import annotations

import subprocess


def test_demo_runs_the_pipeline_end_to_end() -> None:
    p = subprocess.run(["ferry", "demo"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "answers all 4 tags with the source digests" in p.stdout
    assert "the fresh registry serves all 4 tags with the source digests" in p.stdout
    assert "demo complete" in p.stdout
