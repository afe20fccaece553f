"""The offline install kit: made with pip from PyPI, installed with the network shut off, carried in a bundle.

The kit is made for the machine's own Python and architecture (one pip download); where the machine has
other CPythons of 3.9-3.13 (pyenv), a kit for them is installed and run with each, which proves the code
itself runs on them: a kit for 3.9 that installs but does not import would fail here.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from ferry.bundler.export import ExportOptions
from ferry.bundler.export import run as export
from ferry.bundler.kit import PYTHONS, KitOptions, kit_files, machine_arch
from ferry.bundler.kit import run as make_kit
from ferry.importer.verify import VerifyOptions
from ferry.importer.verify import run as verify
from ferry.shared import __version__
from ferry.shared.bundle.reader import Bundle
from ferry.shared.errors import BundleDamaged, UsageError
from tests.support.checks import assert_tree_consistent, tags_of, validate_bundle
from tests.support.mounts import unavailable
from tests.support.zoo import Zoo

HERE = f"{sys.version_info[0]}.{sys.version_info[1]}"
#: a proxy nobody listens on: any attempt of pip (or anything) to reach the network fails at once
OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "no_proxy": ""}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from ferry.cli import main; main()", *args]


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kit") / "ferry-kit"
    subprocess.run(
        _cli("kit", "-o", str(out), "--python", HERE, "--arch", machine_arch(), "-q"), check=True, timeout=600
    )
    return out


def install(kit: Path, home: Path, python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "PYTHON": python,
        "FERRY_NO_PIPX": "1",
        # as the user would get them; set, because as root the defaults are /opt/ferry and /usr/local
        "FERRY_PREFIX": str(home / ".local/share/ferry"),
        "FERRY_BIN": str(home / ".local/bin"),
        "FERRY_MAN": str(home / ".local/share/man/man1"),
        **OFFLINE,
    }
    return subprocess.run(
        ["sh", str(kit / "install.sh")], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_the_kit_installs_with_no_network_and_runs(kit: Path, tmp_path: Path) -> None:
    names = {p.name for p in kit.iterdir()}
    assert {"install.sh", "README.txt", "SHA256SUMS", "ferry.1"} <= names
    assert f"registry_ferry-{__version__}-py3-none-any.whl" in names
    for dep in ("typer", "httpx", "msgpack", "zstandard", "xxhash", "redis", "boto3"):
        assert any(n.lower().startswith(dep) and n.endswith(".whl") for n in names), dep
    # every file is in SHA256SUMS, with its real hash
    sums = dict(reversed(line.split("  ", 1)) for line in (kit / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == names - {"SHA256SUMS"}
    for name, sha in sums.items():
        assert hashlib.sha256((kit / name).read_bytes()).hexdigest() == sha

    home = tmp_path / "home"
    home.mkdir()
    done = install(kit, home)
    assert done.returncode == 0, done.stderr + done.stdout
    ferry = home / ".local/bin/ferry"
    assert ferry.exists()
    assert subprocess.run([str(ferry), "--version"], capture_output=True, text=True).stdout.strip() == (
        f"ferry {__version__}"
    )
    assert (home / ".local/share/man/man1/ferry.1").read_text().startswith(".TH FERRY 1")
    assert "installed ferry" in done.stdout


def test_install_refuses_a_python_it_has_no_wheels_for(kit: Path, tmp_path: Path) -> None:
    done = install(kit, tmp_path, python="/nonexistent/python3")
    assert done.returncode == 1
    assert "not found" in done.stderr


def _other_pythons() -> dict[str, str]:
    """version -> interpreter, for the supported CPythons other than this one that actually run here."""
    found = {}
    for v in PYTHONS:
        if v == HERE:
            continue
        candidates = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{v}.*/bin/python{v}")))
        candidates += [c for c in (shutil.which(f"python{v}"),) if c]
        for exe in candidates:
            got = subprocess.run(
                [exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                check=False,
            )
            if got.returncode == 0 and got.stdout.strip() == v:
                found[v] = exe
                break
    return found


def test_a_kit_for_every_other_python_on_the_machine_installs_and_runs_the_pipeline(
    tmp_path: Path,
) -> None:
    pythons = _other_pythons()
    if not pythons:
        # the machines ferry is built on carry pyenv's CPythons; in CI their absence fails, not skips
        unavailable("no other CPython 3.9-3.13 on this machine (pyenv's versions are used)")
    out = tmp_path / "kit"
    args = ["kit", "-o", str(out), "--arch", machine_arch(), "-q"]
    for v in pythons:
        args += ["--python", v]
    subprocess.run(_cli(*args), check=True, timeout=900)
    for v, exe in pythons.items():
        home = tmp_path / f"home-{v}"
        home.mkdir()
        done = install(out, home, python=exe)
        assert done.returncode == 0, f"{v}: {done.stderr}{done.stdout}"
        # the whole pipeline on this Python: export, verify, inspect, restore and push against real registries
        demo = subprocess.run(
            [str(home / ".local/bin/ferry"), "demo"],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "PATH": os.environ["PATH"]},
        )
        assert demo.returncode == 0, f"{v}: {demo.stderr}{demo.stdout}"
        assert "digests identical end to end" in demo.stdout, v


def test_an_export_carries_the_kit_and_the_far_side_installs_from_the_bundle(
    zoo: Zoo, kit: Path, tmp_path: Path
) -> None:
    out = tmp_path / "b.tar"
    r = export(ExportOptions(root=zoo.root, output=out, with_kit=kit))
    assert len(r.kit) == len(list(kit.iterdir()))
    validate_bundle(out)
    with Bundle.open(out) as b:
        assert b.info.version == (1, 4)
        assert [k.name for k in b.info.kit] == sorted(p.name for p in kit.iterdir())
    checked = verify(VerifyOptions(path=out))
    assert checked.kit == r.kit
    # the far side: only the bundle
    far = tmp_path / "far"
    far.mkdir()
    subprocess.run(["tar", "-xf", str(out), "-C", str(far), "ferry/kit"], check=True)
    done = install(far / "ferry/kit", far)
    assert done.returncode == 0, done.stderr
    assert subprocess.run(
        [str(far / ".local/bin/ferry"), "--version"], capture_output=True, text=True
    ).stdout.strip() == (f"ferry {__version__}")
    # ... and the kit's ferry reads the bundle it came in
    again = subprocess.run(
        [str(far / ".local/bin/ferry"), "verify", str(out)], capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr
    assert "install kit" in again.stderr
    # a reader of a stream passes the kit members by (checked against the index's sha256, written nowhere)
    root = tmp_path / "restored"
    with open(out, "rb") as stdin:
        done = subprocess.run(
            _cli("restore", "-", "--root", str(root), "--owner", "keep", "-q"),
            stdin=stdin,
            capture_output=True,
            text=True,
        )
    assert done.returncode == 0, done.stderr
    catalog = validate_bundle(out)
    assert tags_of(catalog) == zoo.served
    assert_tree_consistent(root, catalog)  # every tag, link and blob of the bundle, digests checked
    assert not list(root.rglob("install.sh"))


def test_a_damaged_kit_member_is_named_by_verify(zoo: Zoo, kit: Path, tmp_path: Path) -> None:
    out = tmp_path / "b.tar"
    export(ExportOptions(root=zoo.root, output=out, with_kit=kit))
    with tarfile.open(out) as t:
        m = t.getmember("ferry/kit/install.sh")
    with open(out, "r+b") as f:
        f.seek(m.offset_data + 10)
        byte = f.read(1)
        f.seek(m.offset_data + 10)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(BundleDamaged) as e:
        verify(VerifyOptions(path=out))
    assert [d["member"] for d in e.value.problems] == ["ferry/kit/install.sh"]


def test_with_kit_refuses_a_folder_that_is_no_kit(zoo: Zoo, tmp_path: Path) -> None:
    (tmp_path / "notakit").mkdir()
    (tmp_path / "notakit" / "x.txt").write_text("x")
    with pytest.raises(UsageError, match="not an install kit"):
        export(ExportOptions(root=zoo.root, output=tmp_path / "b.tar", with_kit=tmp_path / "notakit"))
    assert not (tmp_path / "b.tar").exists()
    with pytest.raises(UsageError, match="no such folder"):
        kit_files(tmp_path / "missing")


def test_kit_refuses_to_overwrite_and_an_unknown_python(tmp_path: Path) -> None:
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "x").write_text("mine")
    with pytest.raises(UsageError, match="refusing to overwrite"):
        make_kit(KitOptions(output=tmp_path / "k"))
    assert (tmp_path / "k" / "x").read_text() == "mine"
    with pytest.raises(UsageError, match=r"--python 3\.8"):
        make_kit(KitOptions(output=tmp_path / "k2", pythons=("3.8",)))
