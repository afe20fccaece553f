"""``make bench-scale``: export, verify, inspect, restore and push at 20,000 and 100,000 tags.

Trees of many small blobs (bench/trees.py ``scale_tree``: the cost per item dominates), generated once and
kept in bench/out.  For every command: wall time, CPU time (the command and its children), and memory
sampled from /proc every 10 ms over the command and every process it forks: the peak of anonymous memory
(what the process allocated: RssAnon + RssShmem) of the largest process, the peak of the file pages it maps
(RssFile: verify maps the bundle read-only, and those pages are the page cache, not ferry's), and the peak
of the anonymous memory of all its processes together.  Export and restore run beside their plain-copy
references (``tar -cf``; ``tar -xf`` + ``chown -R``).

    FERRY_SCALE_SIZES=20000,100000   sizes to run (default both)
    FERRY_SCALE_PUSH=0               leave out the push (about 30 minutes at 100k tags on 2 cores)
    FERRY_SCALE_COMMANDS=a,b         run only these of export, verify, inspect, restore, push, api (the
                                     others keep their last figures in bench/out/scale.json)

``api`` is the export over the V2 API (``ferry export http://…``) from a docker-registry serving the tree:
its memory must stay bounded as well (the manifests it fetched are held until the index is written).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.run import machine, settle

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
GOAL_RSS_MIB = 1024
GOAL_PER_TAG_KIB = 8
GOAL_GROWTH = 5.5
GOAL_INSPECT_S = 3.0


@dataclass
class Run:
    seconds: float
    cpu_seconds: float
    #: the largest anonymous memory of any one process of the command, its largest mapped file pages, and the
    #: largest anonymous memory of all its processes at one moment
    anon_mib: float
    file_mib: float
    anon_all_mib: float

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.__dict__.items()}


def _tree_pids(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def _status(pid: int) -> tuple[int, int]:
    """(anonymous + shmem, file) resident KiB of one process, or (0, 0) once it is gone."""
    anon = file = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("RssAnon:", "RssShmem:")):
                    anon += int(line.split()[1])
                elif line.startswith("RssFile:"):
                    file = int(line.split()[1])
    except OSError:
        pass
    return anon, file


def run(cmd: list[str] | str, *, stdout: object = subprocess.DEVNULL) -> Run:
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, shell=isinstance(cmd, str), stdout=stdout, stderr=subprocess.PIPE)  # type: ignore[arg-type]
    peak = {"anon": 0, "file": 0, "all": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            total = 0
            for pid in _tree_pids(p.pid):
                anon, file = _status(pid)
                peak["anon"] = max(peak["anon"], anon)
                peak["file"] = max(peak["file"], file)
                total += anon
            peak["all"] = max(peak["all"], total)
            done.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    done.set()
    sampler.join()
    err = p.stderr.read().decode() if p.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"bench command failed: {cmd}\n{err}")
    return Run(dt, ru.ru_utime + ru.ru_stime, peak["anon"] / 1024, peak["file"] / 1024, peak["all"] / 1024)


def tree(tags: int) -> tuple[Path, dict[str, int]]:
    root = OUT / f"scale-{tags}-tree"
    stamp = root / ".facts.json"
    if not stamp.exists():
        shutil.rmtree(root, ignore_errors=True)
        print(f"generating the {tags}-tag tree (once; kept in {root}) ...", file=sys.stderr)
        subprocess.run(
            [sys.executable, "-m", "bench.trees", f"scale-{tags}", str(root)], check=True, cwd=REPO
        )
    return root, json.loads(stamp.read_text())


def bench_size(tags: int, commands: set[str]) -> dict[str, object]:
    ferry = shutil.which("ferry") or "ferry"
    root, facts = tree(tags)
    work = OUT / f"scale-{tags}-work"
    bundle, plain = work / "bundle.tar", work / "plain.tar"
    if "export" in commands or not bundle.exists():
        commands = commands | {"export"}  # the others read the bundle it writes
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, object] = {"tree": facts}
    if "export" in commands:
        print(f"scale {tags}: export ...", file=sys.stderr)
        settle()
        out["export"] = run([ferry, "export", str(root), "-o", str(bundle), "-q"]).to_dict()
        settle()
        out["tar_cf"] = run(["tar", "-cf", str(plain), "-C", str(root), "docker"]).to_dict()
    if "verify" in commands:
        print(f"scale {tags}: verify ...", file=sys.stderr)
        settle()
        out["verify"] = run([ferry, "verify", str(bundle), "-q"]).to_dict()
    if "inspect" in commands:
        print(f"scale {tags}: inspect ...", file=sys.stderr)
        settle()
        out["inspect"] = run([ferry, "inspect", str(bundle)]).to_dict()
    if "restore" in commands:
        print(f"scale {tags}: restore ...", file=sys.stderr)
        settle()
        out["restore"] = run(
            [ferry, "restore", str(bundle), "--root", str(work / "restored"), "-q"]
        ).to_dict()
        settle()
        d = work / "restored-tar"
        out["tar_xf_chown"] = run(
            f"mkdir -p {d} && tar -xf {plain} -C {d} && chown -R 10000:10000 {d}"
        ).to_dict()
        shutil.rmtree(work / "restored", ignore_errors=True)
        shutil.rmtree(d, ignore_errors=True)
    plain.unlink(missing_ok=True)
    if "push" in commands or "api" in commands:
        sys.path.insert(0, str(REPO))
        from ferry.localregistry import Registry

        if "push" in commands:
            print(f"scale {tags}: push into a fresh docker-registry ...", file=sys.stderr)
            with Registry(work / "registry") as reg:
                out["push"] = run([ferry, "push", str(bundle), "--registry", reg.url, "-q"]).to_dict()
            shutil.rmtree(work / "registry", ignore_errors=True)
        if "api" in commands:
            print(
                f"scale {tags}: export over the V2 API from a docker-registry serving the tree ...",
                file=sys.stderr,
            )
            api_bundle = work / "api.tar"
            with Registry(root) as reg:
                settle()
                out["api"] = run([ferry, "export", reg.url, "-o", str(api_bundle), "-q"]).to_dict()
            api_bundle.unlink()
    out["bundle_bytes"] = bundle.stat().st_size
    return out


COMMANDS = ("export", "verify", "inspect", "restore", "push", "api")


def report(results: dict[str, dict[str, object]]) -> list[tuple[str, bool]]:
    goals: list[tuple[str, bool]] = []
    sizes = sorted(results, key=int)
    print(
        f"\n{'tags':>7} {'command':<8} {'wall s':>8} {'cpu s':>8} {'anon MiB':>9} {'all MiB':>8} {'file MiB':>9}"
    )
    for size in sizes:
        r = results[size]
        for c in (*COMMANDS, "tar_cf", "tar_xf_chown"):
            m = r.get(c)
            if isinstance(m, dict):
                print(
                    f"{size:>7} {c:<8} {m['seconds']:>8.2f} {m['cpu_seconds']:>8.2f} {m['anon_mib']:>9.1f} "
                    f"{m['anon_all_mib']:>8.1f} {m['file_mib']:>9.1f}"
                )
    for size in sizes:
        r = results[size]
        for c in COMMANDS:
            m = r.get(c)
            if isinstance(m, dict):
                goals.append(
                    (f"{size} tags: {c} peak anonymous memory <= 1 GiB", float(m["anon_mib"]) <= GOAL_RSS_MIB)
                )
        exp, tar = r.get("export"), r.get("tar_cf")
        if isinstance(exp, dict) and isinstance(tar, dict):
            goals.append(
                (
                    f"{size} tags: export at or under tar -cf ({exp['seconds'] / tar['seconds']:.2f})",
                    exp["seconds"] <= tar["seconds"],
                )
            )
        rest, base = r.get("restore"), r.get("tar_xf_chown")
        if isinstance(rest, dict) and isinstance(base, dict):
            goals.append(
                (
                    f"{size} tags: restore at or under tar -xf + chown -R ({rest['seconds'] / base['seconds']:.2f})",
                    rest["seconds"] <= base["seconds"],
                )
            )
        ins = r.get("inspect")
        if isinstance(ins, dict) and int(size) >= 100_000:
            goals.append(
                (
                    f"{size} tags: inspect within {GOAL_INSPECT_S} s ({ins['seconds']:.2f})",
                    ins["seconds"] <= GOAL_INSPECT_S,
                )
            )
    if len(sizes) >= 2:
        small, big = sizes[0], sizes[-1]
        n = int(big) - int(small)
        for c in COMMANDS:
            a, b = results[small].get(c), results[big].get(c)
            if isinstance(a, dict) and isinstance(b, dict):
                growth = b["seconds"] / a["seconds"]
                per_tag = (b["anon_mib"] - a["anon_mib"]) * 1024 / n
                goals.append(
                    (
                        f"{c}: {big}-tag time {growth:.2f}x the {small}-tag time (<= {GOAL_GROWTH})",
                        growth <= GOAL_GROWTH,
                    )
                )
                goals.append(
                    (
                        f"{c}: memory grows {per_tag:.2f} KiB per tag (<= {GOAL_PER_TAG_KIB})",
                        per_tag <= GOAL_PER_TAG_KIB,
                    )
                )
    print()
    for text, ok in goals:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return goals


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    sizes = [int(x) for x in os.environ.get("FERRY_SCALE_SIZES", "20000,100000").split(",")]
    commands = set(os.environ.get("FERRY_SCALE_COMMANDS", ",".join(COMMANDS)).split(","))
    if os.environ.get("FERRY_SCALE_PUSH", "1") == "0":
        commands.discard("push")
    if commands - set(COMMANDS):
        raise SystemExit(f"FERRY_SCALE_COMMANDS: unknown {sorted(commands - set(COMMANDS))}")
    path = OUT / "scale.json"
    results: dict[str, dict[str, object]] = json.loads(path.read_text()) if path.exists() else {}
    for tags in sizes:
        # figures of commands not run this time are kept from the last run
        results.setdefault(str(tags), {}).update(bench_size(tags, commands))
        results[str(tags)]["machine"] = machine()
        path.write_text(json.dumps(results, indent=2))
    report(results)
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
