"""``make bench``: ferry measured side by side with what a plain copy costs, on registry-shaped trees.

Every figure is the best of a few warm runs (page cache hot for both sides: the same conditions for ferry and
for the reference command).  Peak memory is the child's max RSS from wait4.  Results are printed as a table
and written to bench/out/results.json; the goals of the issues are checked and reported as PASS/FAIL.
"""

from __future__ import annotations

import compileall
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
RUNS = int(os.environ.get("FERRY_BENCH_RUNS", "5"))


@dataclass
class Measure:
    seconds: float
    peak_mib: float
    cpu_seconds: float


Command = list[str] | str


def _once(cmd: Command | Callable[[], Command], before: object) -> Measure:
    if callable(before):
        before()
    if callable(cmd):
        cmd = cmd()
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, shell=isinstance(cmd, str), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        err = p.stderr.read().decode() if p.stderr else ""
        raise SystemExit(f"bench command failed: {cmd}\n{err}")
    return Measure(dt, ru.ru_maxrss / 1024, ru.ru_utime + ru.ru_stime)


def measure(cmd: list[str] | str, *, before: object = None) -> Measure:
    """Best wall time over RUNS runs of ``cmd`` (shell string or argv), with peak RSS and CPU time."""
    return min((_once(cmd, before) for _ in range(RUNS)), key=lambda m: m.seconds)


def measure_pair(
    ferry: Command | Callable[[], Command],
    reference: Command | Callable[[], Command],
    *,
    before_ferry: object = None,
    before_reference: object = None,
) -> tuple[Measure, Measure]:
    """Best of RUNS for each, the two interleaved (ferry, reference, reference, ferry, ...).

    This disk (ext4 mounted with ``discard``) gets slower for a while after large deletes, and each run
    deletes the previous output: run all of one command, then all of the other, and the second pays for
    the first's deletes.  Interleaving gives both the same conditions."""
    ours: list[Measure] = []
    theirs: list[Measure] = []
    for i in range(RUNS):
        a, b = (ferry, ours, before_ferry), (reference, theirs, before_reference)
        for cmd, into, before in (a, b) if i % 2 == 0 else (b, a):
            into.append(_once(cmd, before))
    return min(ours, key=lambda m: m.seconds), min(theirs, key=lambda m: m.seconds)


def rm(*paths: Path) -> None:
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


WARM = [
    [
        sys.executable,
        "-c",
        "import ferry.cli, ferry.render, ferry.bundler.export, ferry.importer.verify, ferry.importer.restore",
    ],
    ["tar", "--version"],
    ["openssl", "version"],
    ["chown", "--version"],
    ["xargs", "--version"],
]


def settle(*inputs: Path) -> None:
    """Give the next command the same start as the other: nothing left to write back, free memory, its
    inputs in the page cache.

    Without it a command pays for what ran before it: writing back the previous run's gigabytes (dirty-page
    throttling), or reclaiming a page cache filled by earlier outputs before it can write (free memory is
    zero after a few bulk runs on this 24 GiB machine).  Measured that way, tar -xf of the bulk tree took
    2.3 to 7.8 s.  So: flush, drop the clean page cache (as root), then read the inputs back in.  Outside
    the timing, the same for both sides."""
    os.sync()
    if os.geteuid() == 0:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        # the programs themselves back in the cache too (ferry's modules, tar, openssl): a program is hot
        # when an engineer runs it, and dropping its files would bill its start-up to the measurement
        for warm in WARM:
            # checked: a warm-up that fails (a module renamed) would leave ferry's start-up cold unseen
            subprocess.run(warm, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    buf = bytearray(1 << 20)
    for top in inputs:
        # walked as a stream: a list of 100k paths would grow this process, and a child forked from it
        # inherits that size into its peak RSS (wait4's ru_maxrss keeps the high-water mark across exec)
        walk = [(str(top.parent), [], [top.name])] if top.is_file() else os.walk(top)
        for folder, _, names in walk:
            for name in names:
                with open(os.path.join(folder, name), "rb", buffering=0) as f:
                    while f.readinto(buf):
                        pass


def fresh(output: Path, *inputs: Path) -> None:
    """Remove the previous run's output (one file here: no mass delete, see the restore pair), then
    :func:`settle`."""
    rm(output)
    settle(*inputs)


def blob_files(root: Path) -> list[str]:
    return sorted(str(p) for p in (root / "docker/registry/v2/blobs").rglob("data"))


def bench_tree(name: str, root: Path, facts: dict[str, int], results: dict[str, object]) -> None:
    ferry = shutil.which("ferry") or "ferry"
    work = OUT / f"{name}-work"
    rm(work)
    work.mkdir(parents=True)
    bundle, plain = work / "bundle.tar", work / "plain.tar"
    size_mb = facts["bytes"] / 1e6

    # export vs tar -cf of the same storage tree
    exp, tar = measure_pair(
        [ferry, "export", str(root), "-o", str(bundle), "-q"],
        ["tar", "-cf", str(plain), "-C", str(root), "docker"],
        before_ferry=lambda: fresh(bundle, root),
        before_reference=lambda: fresh(plain, root),
    )
    # verify (both cores, sha256 + xxh3) vs openssl dgst -sha256 (one core) over the same blob bytes
    files = blob_files(root)
    listfile = work / "blobs.txt"
    listfile.write_text("\n".join(files))
    ver, ossl = measure_pair(
        [ferry, "verify", str(bundle), "-q"],
        f"xargs -a {listfile} openssl dgst -sha256 > /dev/null",
        before_ferry=lambda: settle(bundle),
        before_reference=lambda: settle(*map(Path, files)),
    )
    # restore vs the plain copy: tar -xf of the storage tree, then chown -R for Harbor's registry user.
    # Every run writes into a new folder and nothing is deleted until all ran: ext4 skips inodes freed in
    # the last minutes when it allocates (recently_deleted() in ialloc.c), so a run right after deleting
    # the previous run's 100k files spent most of its time scanning inode tables (perf: 60 % of the
    # samples), and tar -xf of the 5000-tag tree measured anywhere from 4.5 s to 50 s
    outputs: list[Path] = []

    def into(name: str, source: Path) -> Path:
        outputs.append(work / f"{name}-{len(outputs)}")
        settle(source)
        return outputs[-1]

    rest, base = measure_pair(
        lambda: [ferry, "restore", str(bundle), "--root", str(into("restored", bundle)), "-q"],
        lambda: (
            f"mkdir -p {(d := into('restored-tar', plain))} && tar -xf {plain} -C {d} && chown -R 10000:10000 {d}"
        ),
    )
    rm(*outputs)
    r = {
        "tree": facts,
        "export_s": round(exp.seconds, 3),
        "tar_cf_s": round(tar.seconds, 3),
        "export_vs_tar": round(exp.seconds / tar.seconds, 3),
        "export_MBps": round(size_mb / exp.seconds, 1),
        "tar_MBps": round(size_mb / tar.seconds, 1),
        "export_peak_MiB": round(exp.peak_mib, 1),
        "verify_s": round(ver.seconds, 3),
        "openssl_sha256_s": round(ossl.seconds, 3),
        "verify_speedup_vs_openssl": round(ossl.seconds / ver.seconds, 3),
        "verify_MBps": round(size_mb / ver.seconds, 1),
        "verify_peak_MiB": round(ver.peak_mib, 1),
        "bundle_bytes": bundle.stat().st_size,
        "restore_s": round(rest.seconds, 3),
        "tar_xf_chown_s": round(base.seconds, 3),
        "restore_vs_tar_xf_chown": round(rest.seconds / base.seconds, 3),
        "restore_peak_MiB": round(rest.peak_mib, 1),
    }
    results[name] = r
    rm(plain)


def compile_ferry() -> None:
    """Write ferry's bytecode, as ``pip install`` does for an installed program: without it every run
    compiles ferry's sources first (an editable install only writes it on import, and not at all under
    PYTHONDONTWRITEBYTECODE, which this machine sets), 40 ms of start-up that no user pays."""
    for package in ("shared", "bundler", "importer", "ferry"):
        compileall.compile_dir(OUT.parent.parent / package, quiet=1)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    compile_ferry()
    results: dict[str, object] = {"machine": machine()}
    only = os.environ.get("FERRY_BENCH_ONLY")
    if not only or "startup" in only.split(","):
        from bench import startup

        print("benchmarking start-up (ferry --help, ferry verify missing.tar) ...", file=sys.stderr)
        results["startup"] = startup.run(OUT / "startup-work")
        save(results)
    for name in ("tags-5000", "bulk"):
        if only and name not in only.split(","):
            continue
        root = OUT / f"{name}-tree"
        stamp = root / ".facts.json"
        if not stamp.exists():
            rm(root)
            print(f"generating {name} tree ...", file=sys.stderr)
            # in a child process: the generator holds large buffers, and a child forked from a big parent
            # would report the parent's memory as its own peak RSS
            subprocess.run([sys.executable, "-m", "bench.trees", name, str(root)], check=True)
        facts = json.loads(stamp.read_text())
        print(f"benchmarking {name}: {facts}", file=sys.stderr)
        bench_tree(name, root, facts, results)
    if not only or "push" in only.split(","):
        from bench import push

        small = OUT / "push-200-tree"
        if not (small / ".facts.json").exists():
            rm(small)
            subprocess.run([sys.executable, "-m", "bench.trees", "push-200", str(small)], check=True)
        for label, tree in (("push-200", small), ("push-5000", OUT / "tags-5000-tree")):
            if label == "push-5000" and os.environ.get("FERRY_BENCH_PUSH_5000", "1") == "0":
                continue
            print(
                f"benchmarking {label} (seed scheme, floor, ferry; each into a fresh registry) ...",
                file=sys.stderr,
            )
            results[label] = push.run(tree, OUT / f"{label}-work")
    if not only or "harbor" in only.split(","):
        from bench import push

        small = OUT / "push-200-tree"
        if not (small / ".facts.json").exists():
            rm(small)
            subprocess.run([sys.executable, "-m", "bench.trees", "push-200", str(small)], check=True)
        print(
            "benchmarking harbor-200 (seed scheme, floor, ferry; each into a fresh real Harbor 2.9.5) ...",
            file=sys.stderr,
        )
        results["harbor-200"] = push.run_harbor(small, OUT / "harbor-200-work")
    if not only or "waves" in only.split(","):
        from bench import waves

        tree = OUT / "tags-5000-tree"
        if not (tree / ".facts.json").exists():
            rm(tree)
            subprocess.run([sys.executable, "-m", "bench.trees", "tags-5000", str(tree)], check=True)
        print(
            "benchmarking waves (a second wave on tags-5000, ferry diff over 5000 tags) ...", file=sys.stderr
        )
        results["waves"] = waves.run(tree, OUT / "waves-work", runs=min(RUNS, 3))
    picked = only.split(",") if only else []

    def wanted(part: str, label: str) -> bool:
        """A part runs whole (``api``) or one size of it (``api-5000``)."""
        return not only or part in picked or label in picked

    if any(wanted("api", label) for label in ("api-200", "api-5000")):
        from bench import api

        for label, name in (("api-200", "push-200"), ("api-5000", "tags-5000")):
            if not wanted("api", label):
                continue
            tree = OUT / f"{name}-tree"
            if not (tree / ".facts.json").exists():
                rm(tree)
                subprocess.run([sys.executable, "-m", "bench.trees", name, str(tree)], check=True)
            print(f"benchmarking {label} (export over the API, skopeo sync, copy) ...", file=sys.stderr)
            big = label == "api-5000"
            # skopeo writes every tag's layers into its own dir: 27 GB and about 20 minutes at 5000 tags
            slow = os.environ.get("FERRY_BENCH_SKOPEO_5000") == "1"
            results[label] = api.run(
                tree,
                OUT / f"{label}-work",
                runs=1 if big else min(RUNS, 3),
                copy=not big,
                skopeo=slow or not big,
                budget=api.skopeo_budget() if big else None,
            )
            save(results)
    if only and "s3clients" in only.split(","):
        from bench import s3_clients

        print("benchmarking S3 clients (boto3, obstore) ...", file=sys.stderr)
        results["s3-clients"] = s3_clients.run()
    if any(wanted("s3", label) for label in ("s3-200", "s3-5000")):
        from bench import api, s3

        for label, name in (("s3-200", "push-200"), ("s3-5000", "tags-5000")):
            if not wanted("s3", label):
                continue
            tree = OUT / f"{name}-tree"
            if not (tree / ".facts.json").exists():
                rm(tree)
                subprocess.run([sys.executable, "-m", "bench.trees", name, str(tree)], check=True)
            print(
                f"benchmarking {label} (export from S3, from disk, skopeo via a registry on S3) ...",
                file=sys.stderr,
            )
            # through a registry on S3 skopeo wrote 2 GB of the 27 GB in ten minutes at 5000 tags: hours
            slow = os.environ.get("FERRY_BENCH_SKOPEO_5000") == "1"
            big = label == "s3-5000"
            results[label] = s3.run(
                tree,
                OUT / f"{label}-work",
                skopeo=slow or not big,
                budget=api.skopeo_budget() if big else None,
            )
            save(results)
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    report(results)


def _skopeo_said(r: dict[str, object], prefix: str, what: str, ratio: str) -> str:
    """A skopeo figure as measured, or, for a run stopped at its time budget, as a bound with its pace."""
    if r.get(f"{prefix}s") is not None:
        return f", {what}: {r[f'{prefix}s']}s ({ratio} {r.get(ratio)})"
    if f"{prefix}at_least_s" in r:
        return (
            f", {what}: stopped unfinished at {r[f'{prefix}at_least_s']}s with {r[f'{prefix}images_done']} "
            f"images done (projected {r[f'{prefix}projected_s']}s; {ratio} bound "
            f"{r.get(ratio + '_at_least', r.get(ratio + '_at_most'))})"
        )
    return ""


def machine() -> dict[str, object]:
    """What the figures were measured on: per-item speed differs between machines of the same size."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": sys.version.split()[0],
        "kernel": os.uname().release,
        "runs": RUNS,
    }


def save(results: dict[str, object]) -> None:
    """Write what was measured so far (a long bench that is stopped keeps its earlier figures)."""
    (OUT / "results.json").write_text(json.dumps(results, indent=2))


def report(results: dict[str, object]) -> None:
    goals = []
    m = results.get("machine")
    if isinstance(m, dict):
        print(
            f"machine: {m.get('cores')} cores, {m.get('cpu')}, Python {m.get('python')}, {m.get('runs')} runs"
        )
    st = results.get("startup")
    if isinstance(st, dict):
        print(
            f"\nstart-up (median of 21): installed ferry --help {st['installed_help_s']}s, verify missing.tar "
            f"{st['installed_verify_missing_s']}s; dev venv {st['dev_help_s']}s / {st['dev_verify_missing_s']}s; "
            f"python -c pass {st['python_s']}s"
        )
        goals.append(("startup: ferry --help within 0.15 s", st["installed_help_s"] <= 0.15))
        goals.append(
            ("startup: ferry verify missing.tar within 0.15 s", st["installed_verify_missing_s"] <= 0.15)
        )
    print(
        f"\n{'tree':<10} {'ferry export':>13} {'tar -cf':>9} {'ratio':>6} {'MB/s':>7} {'peak MiB':>9} "
        f"{'verify':>8} {'openssl':>8} {'speedup':>8} {'restore':>8} {'tar-x+chown':>12} {'ratio':>6}"
    )
    for name, r in results.items():
        if name in ("machine", "waves", "startup") or name.startswith(("push-", "harbor-", "api-", "s3-")):
            continue
        assert isinstance(r, dict)
        print(
            f"{name:<10} {r['export_s']:>12.2f}s {r['tar_cf_s']:>8.2f}s {r['export_vs_tar']:>6.2f} "
            f"{r['export_MBps']:>7.0f} {r['export_peak_MiB']:>9.1f} {r['verify_s']:>7.2f}s "
            f"{r['openssl_sha256_s']:>7.2f}s {r['verify_speedup_vs_openssl']:>7.2f}x "
            f"{r['restore_s']:>7.2f}s {r['tar_xf_chown_s']:>11.2f}s {r['restore_vs_tar_xf_chown']:>6.2f}"
        )
        goals.append((f"{name}: export no slower than tar -cf (ratio <= 1.0)", r["export_vs_tar"] <= 1.0))
        goals.append((f"{name}: verify >= 1.6x openssl dgst -sha256", r["verify_speedup_vs_openssl"] >= 1.6))
        goals.append(
            (f"{name}: restore no slower than tar -xf + chown -R", r["restore_vs_tar_xf_chown"] <= 1.0)
        )
        if name == "tags-5000":
            goals.append((f"{name}: export peak memory < 200 MiB", r["export_peak_MiB"] < 200))
    for name, r in results.items():
        if name != "harbor-200":
            continue
        assert isinstance(r, dict)
        print(
            f"\n{name}: {r['images']} images into real Harbor — seed scheme {r['seed_s']}s, floor {r['floor_s']}s, "
            f"ferry export {r['ferry_export_s']}s + push {r['ferry_push_s']}s; ferry/seed {r['ferry_vs_seed']}, "
            f"push/floor {r['push_vs_floor']} (end to end/floor {r['ferry_vs_floor_end_to_end']})"
        )
        goals.append(
            (f"{name}: ferry export + push at most 0.35x the seed scheme", r["ferry_vs_seed"] <= 0.35)
        )
        goals.append((f"{name}: ferry push within 1.15x of the floor client", r["push_vs_floor"] <= 1.15))
    for name, r in results.items():
        if not name.startswith("push-"):
            continue
        assert isinstance(r, dict)
        print(
            f"\n{name}: {r['images']} images — seed scheme {r['seed_s']}s, floor {r['floor_s']}s, "
            f"ferry export {r['ferry_export_s']}s + push {r['ferry_push_s']}s; push/floor {r['push_vs_floor']}, "
            f"end-to-end/seed {r['end_to_end_vs_seed']}; ferry push CPU {r['ferry_push_cpu_s_per_1000']}s per 1000 images"
        )
        goals.append((f"{name}: ferry push within 1.25x of the floor", r["push_vs_floor"] <= 1.25))
        goals.append(
            (f"{name}: export + push at most 0.35x the seed scheme", r["end_to_end_vs_seed"] <= 0.35)
        )
    for name in ("api-200", "api-5000"):
        a = results.get(name)
        if not isinstance(a, dict):
            continue
        print(
            f"\n{name}: export over the API {a['api_export_s']}s ({a['api_export_MBps']} MB/s, peak "
            f"{a['api_export_peak_MiB']} MiB), storage-tree export {a['tree_export_s']}s"
            + _skopeo_said(a, "skopeo_sync_dir_", "skopeo sync to dir", "api_export_vs_skopeo")
            + (
                f"; copy registry to registry {a['copy_s']}s vs skopeo sync {a['skopeo_sync_registry_s']}s "
                f"({a['copy_vs_skopeo']}x)"
                if "copy_s" in a
                else ""
            )
        )
        if name == "api-5000":
            goals.append((f"{name}: API export peak memory < 300 MiB", a["api_export_peak_MiB"] < 300))
        if "copy_vs_skopeo" in a:
            goals.append((f"{name}: copy at most 0.5x skopeo sync", a["copy_vs_skopeo"] <= 0.5))
    for name in ("s3-200", "s3-5000"):
        x = results.get(name)
        if not isinstance(x, dict):
            continue
        print(
            f"\n{name}: export from S3 {x['s3_export_s']}s ({x['s3_export_MBps']} MB/s, {x['s3_objects_per_s']} "
            f"objects/s, peak {x['s3_export_peak_MiB']} MiB), from disk {x['disk_export_s']}s"
            + _skopeo_said(x, "skopeo_", "skopeo via a registry on S3", "ferry_speedup_vs_skopeo")
        )
        # a skopeo run stopped at its budget still proves the goal when the budget alone is 3x ferry's time
        speedup = x.get("ferry_speedup_vs_skopeo", x.get("ferry_speedup_vs_skopeo_at_least"))
        if isinstance(speedup, (int, float)):
            goals.append((f"{name}: export from S3 at least 3x the skopeo route", speedup >= 3))
    w = results.get("waves")
    if isinstance(w, dict):
        print(
            f"\nwaves: {w['changed']} images with a new top layer, {w['added']} tags added, of {w['tags']}: "
            f"delta {w['delta_bytes'] / 1e6:.1f} MB = {w['delta_vs_minimum']}x the minimum, "
            f"{w['delta_vs_full']}x a full export, {w['delta_vs_by_reference']}x a by-reference differential "
            f"({w['by_reference_bytes'] / 1e6:.1f} MB); delta export {w['delta_export_s']}s vs full "
            f"{w['full_export_s']}s ({w['delta_vs_full_export_time']}x); ferry diff over {w['tags']} tags "
            f"{w['diff_5000_s']}s"
        )
        goals.append(("waves: delta bytes exactly the minimum (1.00)", w["delta_vs_minimum"] == 1.0))
        goals.append(
            ("waves: delta export at most 0.2x the full export", w["delta_vs_full_export_time"] <= 0.2)
        )
        goals.append(("waves: ferry diff over 5000 tags within 10 s", w["diff_5000_s"] <= 10))
    print()
    for text, ok in goals:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    print(f"\nresults: {OUT / 'results.json'}")


if __name__ == "__main__":
    main()
