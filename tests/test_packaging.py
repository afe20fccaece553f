"""The wheel installs one top-level package, and the code imports itself only through it."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def build_wheel(dest: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dest),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = dest.glob("registry_ferry-*.whl")
    return wheel


def test_the_wheel_holds_only_the_ferry_package(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        (dist_info,) = {n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")}
        top_level = z.read(f"{dist_info}/top_level.txt").decode().split()
        metadata = z.read(f"{dist_info}/METADATA").decode()
        entry_points = z.read(f"{dist_info}/entry_points.txt").decode()
    assert top_level == ["ferry"]
    assert {n.split("/", 1)[0] for n in names} == {"ferry", dist_info}
    # the folders at the top of the repository arrive under ferry/, whole
    for path in (
        "ferry/shared/errors.py",
        "ferry/bundler/export.py",
        "ferry/importer/push.py",
        "ferry/cli.py",
    ):
        assert path in names
    assert "Name: registry-ferry" in metadata
    assert "Requires-Python: >=3.9" in metadata
    assert "ferry = ferry.cli:main" in entry_points


def test_no_module_imports_the_folders_as_top_level_packages() -> None:
    """``import shared`` would load a second copy of every module beside ``ferry.shared`` (two
    FerryError classes, two registries of state) and fails in the installed wheel."""
    offenders = []
    for path in REPO.rglob("*.py"):
        rel = path.relative_to(REPO)
        if rel.parts[0] in (".venv", "build") or path.resolve() != path:
            continue  # ferry/shared, ferry/bundler and ferry/importer are symlinks to the same files
        for node in ast.walk(ast.parse(path.read_text(), str(rel))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [
                f"{rel}:{node.lineno} {n}"
                for n in names
                if n.split(".")[0] in ("shared", "bundler", "importer")
            ]
    assert offenders == []
