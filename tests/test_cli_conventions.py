"""The habits operators have: flags anywhere, readable help at 80 columns, full digests for scripts, every
environment variable documented, requests shown with -vv."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import typer

from ferry.bundler.export import ExportOptions
from ferry.bundler.export import run as export
from ferry.cli import ENVIRONMENT, app, global_options_first
from ferry.localregistry import Registry
from tests.support.zoo import Zoo

REPO = Path(__file__).resolve().parent.parent
COMMANDS = ("export", "verify", "inspect", "restore", "push", "copy", "diff", "receipt", "kit", "demo")


def ferry(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ferry", *args], capture_output=True, text=True, env={**os.environ, **env})


def test_verbose_and_debug_are_taken_after_the_command_too() -> None:
    assert global_options_first(["push", "b.tar", "-vv", "--registry", "x", "--debug"]) == [
        "-vv",
        "--debug",
        "push",
        "b.tar",
        "--registry",
        "x",
    ]
    assert global_options_first(["verify", "--", "-v"]) == ["verify", "--", "-v"]
    done = ferry("verify", "/nonexistent.tar", "-v")
    assert done.returncode == 2 and "error (source-not-found)" in done.stderr  # not "no such option"


def test_dash_vv_shows_each_request_with_its_status_and_time(tmp_path: Path) -> None:
    with Registry(tmp_path / "storage") as reg:
        done = ferry("export", reg.url, "-o", str(tmp_path / "b.tar"), "-vv")
    assert re.search(rf"GET {re.escape(reg.url)}/v2/ 200 \d+\.\d+s", done.stderr), done.stderr
    assert "httpcore" not in done.stderr and "connect_tcp" not in done.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_help_fits_80_columns_without_cutting_words(command: str) -> None:
    done = ferry(command, "--help", COLUMNS="80")
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    # every option's whole help text is there: wrapped, never cut short
    shown = " ".join(done.stdout.split())
    group = typer.main.get_command(app)
    cmd = group.get_command(group.context_class(group, info_name="ferry"), command)  # type: ignore[attr-defined]
    for param in cmd.params:
        text = " ".join((getattr(param, "help", None) or "").split())
        assert text in shown, (param.name, text)


def test_inspect_prints_full_digests_when_piped(zoo: Zoo, tmp_path: Path) -> None:
    out = tmp_path / "b.tar"
    export(ExportOptions(root=zoo.root, output=out))
    done = ferry("inspect", str(out))
    assert done.returncode == 0
    rows = [line.split("\t") for line in done.stdout.splitlines() if "\t" in line]
    assert rows[0][:3] == ["repository", "tag", "digest"]
    served = {(repo, tag): d for repo, tags in zoo.served.items() for tag, d in tags.items()}
    listed = {(r[0], r[1]): r[2] for r in rows[1:] if r[1] != "(untagged)"}
    assert listed == served  # every tag with its whole digest, one line each


def test_every_environment_variable_read_is_documented() -> None:
    read = set()
    for path in [
        *REPO.glob("shared/**/*.py"),
        *REPO.glob("bundler/*.py"),
        *REPO.glob("importer/**/*.py"),
        *REPO.glob("ferry/*.py"),
    ]:
        text = path.read_text()
        read |= set(re.findall(r"environ(?:\.get)?[\[(]\s*[\"']([A-Z][A-Z0-9_]+)[\"']", text))
        # FERRY_{REGISTRY,SOURCE}_{USERNAME,PASSWORD} are read as f"{env}_USERNAME"
        if 'f"{env}_USERNAME"' in text:
            read |= {f"{e}_{k}" for e in ("FERRY_REGISTRY", "FERRY_SOURCE") for k in ("USERNAME", "PASSWORD")}
    documented = {var for var, _ in ENVIRONMENT}
    # AWS_CA_BUNDLE is taken out of the demo registry's environment, not read; HOME and PATH are the system's
    read -= {"AWS_CA_BUNDLE", "HOME", "PATH"}
    assert read - documented == set()
    helps = ferry("--help", COLUMNS="200").stdout
    readme = (REPO / "README.md").read_text()
    for var in documented:
        assert var in helps, var
        assert var in readme, var


def test_the_man_page_has_every_command_and_option() -> None:
    page = ferry("manpage").stdout
    assert page.startswith(".TH FERRY 1")
    for command in COMMANDS:
        assert f".SS ferry {command}" in page
    assert "\\-\\-with\\-kit" in page and "\\-\\-authfile" in page
    assert "REGISTRY_AUTH_FILE" in page


def test_shell_completion_is_offered() -> None:
    # Typer finds the shell by walking up the process tree, so the option is
    # run from a bash (the trailing `true` keeps bash from exec-ing ferry):
    # under make in CI the nearest shell would otherwise be sh.
    done = subprocess.run(["bash", "-c", "ferry --show-completion; true"], capture_output=True, text=True)
    assert "_FERRY_COMPLETE" in done.stdout, done.stderr
    # and completes ferry's own commands
    words = subprocess.run(
        ["ferry"],
        capture_output=True,
        text=True,
        env={**os.environ, "_FERRY_COMPLETE": "complete_bash", "COMP_WORDS": "ferry exp", "COMP_CWORD": "1"},
    ).stdout
    assert "export" in words


def test_tab_separated_rows_write_control_characters_out(capsys: pytest.CaptureFixture[str]) -> None:
    """Off a terminal a table is tab-separated lines; a cell's own tab or newline must not split it."""
    from ferry import render

    render.table("t", ["a", "b"], [["x", "y"], ["v1\tx", "n\nl"], ["esc\x1b[31m", 3]])
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["a\tb", "x\ty", "v1\\x09x\tn\\x0al", "esc\\x1b[31m\t3"]


HOSTILE = (
    "plain",
    "library/alpine:link",
    "[bold]not markup[/bold]",
    "a[b]c",
    "tag\\",
    "x\\[red]y",
    "x\\\\[red]y",
    "ends\\\\",
    "[/]",
    "v1\nv2\r\x07\x1b[31m",
    "emoji :link: [@click=x]",
)


def test_plain_text_off_a_terminal_is_what_rich_prints(capsys: pytest.CaptureFixture[str]) -> None:
    """Off a terminal, messages are written without rich (its import cost a third of a failing command's
    start); what is written must be exactly what rich's console writes to a pipe, also for hostile data."""
    import io

    from rich.console import Console
    from rich.markup import escape

    from ferry import render

    for text in HOSTILE:
        assert render.safe(text) == escape(text.translate(render._CONTROL)), text
    lines = [
        f"[bold red]error[/] [dim](code)[/]: {render.safe(t)} [dim]{render.safe(f'[volume {t}]')}[/]"
        for t in HOSTILE
    ] + ["[yellow]hint[/]: a \\[literal] bracket", "no tags at all", "[green]ok[/] \\\\[red]two backslashes"]
    for line in lines:
        rich = io.StringIO()
        Console(file=rich, highlight=False, emoji=False, force_terminal=False).print(line, soft_wrap=True)
        render._Plain(False).print(line, soft_wrap=True)
        assert capsys.readouterr().out == rich.getvalue(), line
    # and a failing command off a terminal never imports rich's console
    code = "import sys; from ferry.cli import main; sys.argv = ['ferry', 'verify', 'missing.tar']\n"
    code += "try:\n    main()\nexcept SystemExit as e:\n    print(e.code, 'rich.console' in sys.modules)"
    done = subprocess.run(["python", "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.stdout.split() == ["2", "False"], done
    assert done.stderr.startswith("error (source-not-found): missing.tar: no such bundle"), done.stderr
