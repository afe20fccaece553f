"""The offline install kit: ferry's wheel and every dependency for the Pythons and machines air-gapped hosts
run, and an ``install.sh`` that installs from the folder with no network.

Made on a connected machine (``ferry kit -o DIR``: pip downloads binary wheels for each target with
``--platform/--python-version/--only-binary``), carried beside a bundle or inside it (``export --with-kit``),
installed on the far side with ``sh install.sh``.  Nothing here is fetched at install time.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from base64 import urlsafe_b64encode
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ferry.shared import __version__
from ferry.shared.bundle.format import KIT_NAME_RE, KitFile
from ferry.shared.digest import CHUNK
from ferry.shared.errors import FerryError, UsageError

log = logging.getLogger(__name__)

DIST = "registry-ferry"
#: the CPython versions ferry supports (requires-python >= 3.9) and the machines operators run
PYTHONS = ("3.9", "3.10", "3.11", "3.12", "3.13")
ARCHES = ("x86_64", "aarch64")
#: manylinux levels up to glibc 2.28 (RHEL 8, Debian 10 and newer): a wheel that needs a newer glibc would
#: not install on the oldest hosts ferry supports, so pip is not offered one
_MANYLINUX = ("manylinux2014", "manylinux_2_17", "manylinux_2_24", "manylinux_2_26", "manylinux_2_28")
INSTALL_SH = "install.sh"


class KitError(FerryError):
    code = "kit"


@dataclass(frozen=True)
class KitOptions:
    output: Path
    pythons: tuple[str, ...] = PYTHONS
    arches: tuple[str, ...] = ARCHES
    #: ferry's own wheel, when not built from this checkout or repacked from the installed ferry
    wheel: Path | None = None
    force: bool = False
    #: extra files for the kit (the man page the CLI renders), name -> content
    extra: tuple[tuple[str, bytes], ...] = ()
    jobs: int = 4


@dataclass(frozen=True)
class KitResult:
    path: Path
    files: tuple[KitFile, ...]
    pythons: tuple[str, ...]
    arches: tuple[str, ...]
    seconds: float

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": True,
            "path": str(self.path),
            "files": [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in self.files],
            "bytes": self.bytes,
            "pythons": list(self.pythons),
            "arches": list(self.arches),
            "seconds": round(self.seconds, 3),
        }


def machine_arch() -> str:
    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def run(opts: KitOptions) -> KitResult:
    """Write the kit to ``opts.output``: built in a folder beside it and renamed into place at the end, so
    an interrupted run leaves no half kit under that name."""
    started = time.monotonic()
    for py in opts.pythons:
        if py not in PYTHONS:
            raise UsageError(f"--python {py}: ferry supports CPython {', '.join(PYTHONS)}")
    for arch in opts.arches:
        if arch not in ARCHES:
            raise UsageError(f"--arch {arch}: the kit is made for {' and '.join(ARCHES)}")
    out = opts.output
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not opts.force:
        raise UsageError(f"{out} exists: refusing to overwrite it (use --force, or another -o)")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        wheel = _ferry_wheel(opts, work)
        _download(wheel, opts, work)
        for name, content in opts.extra:
            (work / name).write_bytes(content)
        (work / INSTALL_SH).write_text(install_script(), encoding="utf-8")
        (work / INSTALL_SH).chmod(0o755)
        (work / "README.txt").write_text(_readme(opts), encoding="utf-8")
        files = kit_files(work, sums=False)
        sums = "".join(f"{f.sha256}  {f.name}\n" for f in files)
        (work / "SHA256SUMS").write_text(sums, encoding="ascii")
        files = tuple(sorted((*files, _kit_file(work / "SHA256SUMS")), key=lambda f: f.name))
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log.info("kit: %d files, %d bytes in %s", len(files), sum(f.size for f in files), out)
    return KitResult(out, files, opts.pythons, opts.arches, time.monotonic() - started)


def kit_files(folder: Path, *, sums: bool = True) -> tuple[KitFile, ...]:
    """The kit's files with their sizes and sha256, sorted by name: what ``export --with-kit`` lists in the
    index.  Refuses a folder that is not a kit (no install.sh, no ferry wheel, a sub-folder, an odd name)."""
    if not folder.is_dir():
        raise UsageError(f"--with-kit {folder}: no such folder (make one with `ferry kit -o {folder}`)")
    out = []
    for p in sorted(folder.iterdir()):
        if p.name == "SHA256SUMS" and not sums:
            continue
        if not p.is_file() or p.is_symlink() or not KIT_NAME_RE.fullmatch(p.name):
            raise UsageError(
                f"--with-kit {folder}: {p.name!r} is not a plain file a kit holds; "
                f"make the kit with `ferry kit -o {folder}`"
            )
        out.append(_kit_file(p))
    names = {f.name for f in out}
    if INSTALL_SH not in names or not any(
        n.startswith("registry_ferry-") and n.endswith(".whl") for n in names
    ):
        raise UsageError(
            f"--with-kit {folder}: not an install kit (no install.sh or no ferry wheel); "
            f"make one with `ferry kit -o {folder}`"
        )
    return tuple(out)


def _kit_file(p: Path) -> KitFile:
    sha, size = hashlib.sha256(), 0
    with open(p, "rb") as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return KitFile(p.name, size, sha.hexdigest())


def _source_tree() -> Path | None:
    """This checkout, when ferry runs from one (an editable install): its wheel is built from it."""
    root = Path(__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and f'name = "{DIST}"' in pyproject.read_text(encoding="utf-8"):
        return root
    return None


def _ferry_wheel(opts: KitOptions, work: Path) -> Path:
    if opts.wheel is not None:
        if not opts.wheel.is_file() or not opts.wheel.name.startswith("registry_ferry-"):
            raise UsageError(f"--wheel {opts.wheel}: not a ferry wheel (registry_ferry-*.whl)")
        return Path(shutil.copy2(opts.wheel, work / opts.wheel.name))
    tree = _source_tree()
    if tree is not None:
        return _build_wheel(tree, work)
    return repack_installed(work)


def _build_wheel(tree: Path, work: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--disable-pip-version-check"]
    # build with what is installed here when it can (no download of setuptools)
    if all(importlib.util.find_spec(m) is not None for m in ("setuptools", "wheel")):
        cmd.append("--no-build-isolation")
    with tempfile.TemporaryDirectory() as build:
        _pip([*cmd, "--wheel-dir", build, str(tree)], "building ferry's wheel")
        built = sorted(Path(build).glob("registry_ferry-*.whl"))
        if len(built) != 1:
            raise KitError(f"building ferry's wheel from {tree} gave {len(built)} wheels")
        return Path(shutil.move(str(built[0]), work / built[0].name))


def repack_installed(work: Path) -> Path:
    """ferry's wheel rebuilt from the installed files (a wheel is its files plus ``.dist-info``): a ferry
    installed from a kit can make the next kit."""
    try:
        dist = importlib.metadata.distribution(DIST)
    except importlib.metadata.PackageNotFoundError:
        raise KitError(
            "ferry's own wheel is not at hand: not a checkout, and no installed registry-ferry",
            hint="Pass the wheel with --wheel FILE (built with `pip wheel --no-deps .` in a checkout).",
        ) from None
    files = [f for f in dist.files or () if not str(f).startswith("..") and "__pycache__" not in str(f)]
    info = next((f for f in files if f.name == "WHEEL" and f.parent.name.endswith(".dist-info")), None)
    direct = json.loads(dist.read_text("direct_url.json") or "{}")
    if info is None or direct.get("dir_info", {}).get("editable"):
        raise KitError(
            "the installed ferry cannot be repacked into a wheel (an editable install holds no files)",
            hint="Pass the wheel with --wheel FILE.",
        )
    dist_info = str(info.parent)
    skip = {f"{dist_info}/{n}" for n in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")}
    name = f"registry_ferry-{dist.version}-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(work / name, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(files, key=str):
            arc = str(f).replace(os.sep, "/")
            if arc in skip:
                continue
            data = Path(str(f.locate())).read_bytes()
            z.writestr(arc, data)
            b64 = urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{arc},sha256={b64},{len(data)}")
        record.append(f"{dist_info}/RECORD,,")
        z.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return work / name


def _pip(cmd: list[str], what: str) -> None:
    log.debug("running %s", " ".join(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise KitError(
            f"{what} failed: {' / '.join(tail) or f'pip exited {done.returncode}'}",
            hint="The kit is made on a machine that reaches PyPI (or your mirror: pip's own configuration "
            "applies).",
        )


def _download(wheel: Path, opts: KitOptions, work: Path) -> None:
    """Every dependency as binary wheels for each (python, arch), fetched into one folder per target (pip
    runs in parallel) and merged: a pure-Python wheel is shared by all."""
    targets = [(py, arch) for py in opts.pythons for arch in opts.arches]

    def fetch(target: tuple[str, str]) -> Path:
        py, arch = target
        dest = work / f".{py}-{arch}"
        cmd = [
            sys.executable,
            "-c",
            _PIP_FOR_TARGET,
            py,
            arch,
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            py,
            "--abi",
            "cp" + py.replace(".", ""),
            *(x for level in _MANYLINUX for x in ("--platform", f"{level}_{arch}")),
            "--dest",
            str(dest),
            str(wheel),
        ]
        _pip(cmd, f"fetching the dependencies for CPython {py} on {arch}")
        return dest

    with ThreadPoolExecutor(max(1, opts.jobs)) as pool:
        folders = list(pool.map(fetch, targets))
    for folder in folders:
        for p in folder.iterdir():
            if p.name != wheel.name and not (work / p.name).exists():
                os.replace(p, work / p.name)
        shutil.rmtree(folder)


# pip download's --python-version and --platform choose wheels by tag and Requires-Python, but evaluate
# environment markers for the interpreter pip runs on (pip issue #11664): redis's `async-timeout;
# python_full_version < "3.11.3"` and anyio's `exceptiongroup; python_version < "3.11"` would be missing from a
# kit for 3.9 made on 3.12.  So pip runs with the target's marker environment.  X.Y.0 is the oldest patch
# release, which needs every backport a later one does; the installing pip evaluates the markers again.
_PIP_FOR_TARGET = """
import runpy, sys
from pip._vendor.packaging import markers
py, arch = sys.argv[1], sys.argv[2]
del sys.argv[1:3]
env = dict(markers.default_environment())
env.update(python_version=py, python_full_version=py + ".0", implementation_version=py + ".0",
           implementation_name="cpython", platform_python_implementation="CPython", platform_machine=arch,
           sys_platform="linux", platform_system="Linux", os_name="posix")
markers.default_environment = lambda: dict(env)
sys.argv[0] = "pip"
runpy.run_module("pip", run_name="__main__", alter_sys=True)
"""


def _readme(opts: KitOptions) -> str:
    return f"""ferry {__version__} offline install kit
CPython {", ".join(opts.pythons)} on Linux {", ".join(opts.arches)} (glibc 2.17 or newer)

Install, with no network:
    sh install.sh
As root it installs into /opt/ferry with the command in /usr/local/bin; otherwise into
~/.local/share/ferry with the command in ~/.local/bin.  PYTHON=/path/to/python3 picks the interpreter;
FERRY_PREFIX and FERRY_BIN the folders; pipx is used when present (FERRY_NO_PIPX=1: never).

Check the files first, if they travelled on their own:
    sha256sum -c SHA256SUMS
"""


def install_script() -> str:
    return _INSTALL_SH.replace("@VERSION@", __version__).replace("@DIST@", DIST)


# POSIX sh: the far side may have no bash.  pip is told to use no index and no configuration of the host,
# so nothing is fetched and a host's pip.conf cannot redirect it.
_INSTALL_SH = r"""#!/bin/sh
# ferry offline installer: installs ferry @VERSION@ from the wheels beside this script, with no network.
# Environment: PYTHON (default python3), FERRY_PREFIX, FERRY_BIN, FERRY_MAN, FERRY_NO_PIPX=1.
set -eu
kit=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
if [ "$(id -u)" = 0 ]; then
  prefix=${FERRY_PREFIX:-/opt/ferry}; bindir=${FERRY_BIN:-/usr/local/bin}
  mandir=${FERRY_MAN:-/usr/local/share/man/man1}
else
  prefix=${FERRY_PREFIX:-$HOME/.local/share/ferry}; bindir=${FERRY_BIN:-$HOME/.local/bin}
  mandir=${FERRY_MAN:-$HOME/.local/share/man/man1}
fi
say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

command -v "$python" >/dev/null 2>&1 || die "$python not found: install Python 3.9 or newer, or set PYTHON=/path/to/python3"
pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || die "$python does not run"
"$python" -c 'import sys; sys.exit(not (3, 9) <= sys.version_info[:2] <= (3, 13))' \
  || die "this kit has wheels for Python 3.9 to 3.13; $python is $pyver (set PYTHON=/path/to/python3)"
export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

installed=""
if [ -z "${FERRY_NO_PIPX:-}" ] && command -v pipx >/dev/null 2>&1; then
  if pipx install --force --python "$python" --pip-args="--no-index --find-links=$kit" "@DIST@==@VERSION@"; then
    say "installed ferry @VERSION@ with pipx ($python $pyver)"
    installed=$(command -v ferry || echo "$HOME/.local/bin/ferry")
  else
    say "pipx could not install offline; installing into a venv instead"
  fi
fi
if [ -z "$installed" ]; then
  "$python" -m venv --clear "$prefix/venv" \
    || die "could not create a venv in $prefix/venv (Debian/Ubuntu: apt-get install python3-venv)"
  "$prefix/venv/bin/python" -m pip install --quiet --no-index --find-links "$kit" "@DIST@==@VERSION@" \
    || die "pip could not install ferry from $kit (see above)"
  mkdir -p "$bindir"
  ln -sf "$prefix/venv/bin/ferry" "$bindir/ferry"
  say "installed ferry @VERSION@ into $prefix/venv ($python $pyver)"
  say "command: $bindir/ferry"
  installed=$bindir/ferry
fi
if [ -f "$kit/ferry.1" ]; then
  mkdir -p "$mandir" && cp "$kit/ferry.1" "$mandir/ferry.1" && say "man page: $mandir/ferry.1"
fi
"$installed" --version
case ":$PATH:" in
  *":$(dirname "$installed"):"*) ;;
  *) say "add $(dirname "$installed") to PATH to run ferry by name" ;;
esac
"""


__all__ = [
    "ARCHES",
    "PYTHONS",
    "KitOptions",
    "KitResult",
    "install_script",
    "kit_files",
    "machine_arch",
    "run",
]
