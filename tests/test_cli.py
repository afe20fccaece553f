"""The command line: thin over the library, one clear line per user mistake, never a traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path
from unittest import mock

import pytest
from typer.testing import CliRunner

from ferry.cli import app, parse_size
from ferry.shared.errors import UsageError

runner = CliRunner()


def ferry(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ferry", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["export", "/nonexistent/registry", "-o", "/tmp/x.tar"], 2, "no such file or directory"),
        (["export", "/etc", "-o", "/tmp/x.tar"], 2, "no docker/registry/v2"),
        (["export", "/etc/passwd", "-o", "/tmp/x.tar"], 2, "neither a directory nor a tar"),
        (["verify", "/nonexistent.tar"], 2, "no such bundle"),
        (["inspect", "/etc/passwd"], 1, "not a ferry bundle"),
    ],
)
def test_user_mistakes_are_one_line_errors(args: list[str], code: int, needle: str) -> None:
    p = ferry(*args)
    assert p.returncode == code, p.stderr
    assert needle in p.stderr and "Traceback" not in p.stderr
    assert p.stderr.startswith("error (")


def test_bad_volume_size_and_output_dir(tmp_path: Path) -> None:
    p = ferry("export", str(tmp_path), "-o", str(tmp_path / "b.tar"), "--volume-size", "four gigs")
    assert p.returncode == 2 and "not a size" in p.stderr
    p = ferry("export", str(tmp_path), "-o", str(tmp_path))
    assert p.returncode == 2 and "is a directory" in p.stderr


def test_parse_size() -> None:
    assert parse_size("4G") == 4_000_000_000 < 2**32 - 1  # fits FAT32
    assert parse_size("4GiB") == 4 * 2**30
    assert parse_size("700M") == 700_000_000
    assert parse_size("12345") == 12345
    with pytest.raises(UsageError):
        parse_size("-1G")


def test_export_parses_options_into_one_library_call(tmp_path: Path) -> None:
    with mock.patch("ferry.bundler.export.run") as run:
        run.return_value.to_dict.return_value = {}
        r = runner.invoke(
            app,
            [
                "export",
                str(tmp_path),
                "-o",
                str(tmp_path / "b.tar"),
                "--untagged",
                "--include",
                "a/*",
                "--exclude",
                "a/b:*",
                "--skip-broken",
                "--volume-size",
                "1G",
                "-j",
                "3",
                "--json",
            ],
        )
    assert r.exit_code == 0, r.output
    opts = run.call_args.args[0]
    assert opts.root == tmp_path and opts.output == tmp_path / "b.tar"
    assert (
        opts.selection.untagged
        and opts.selection.include == ("a/*",)
        and opts.selection.exclude == ("a/b:*",)
    )
    assert opts.skip_broken and opts.volume_size == 10**9 and opts.jobs == 3


def test_help_explains_every_command() -> None:
    for cmd in ("export", "verify", "inspect", "restore", "push", "diff", "copy", "receipt"):
        r = runner.invoke(app, [cmd, "--help"])
        assert r.exit_code == 0 and "--quiet" in r.output
    assert "air gap" in runner.invoke(app, ["--help"]).output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["push", "b.tar", "--registry", "ftp://host"], "unsupported scheme 'ftp'"),
        (["push", "b.tar", "--registry", "http://[::1"], "not a valid URL"),
        (["push", "b.tar", "--registry", "http://host:port"], "not a valid URL"),
        (["push", "b.tar", "--registry", "https://host", "--ca-cert", "/nonexistent.pem"], "no such file"),
        (["push", "b.tar", "--registry", "https://host", "--ca-cert", "/etc/hostname"], "not a PEM"),
        (["push", "b.tar", "--registry", "https://host", "--password-stdin"], "needs --username"),
        (["push", "b.tar", "--registry", "https://host", "--chunk-size", "64XB"], "--chunk-size '64XB'"),
        (["restore", "b.tar", "--root", "/tmp/r", "--redis-url", "http://host:6379"], "not a Redis URL"),
        (["restore", "b.tar", "--root", "/tmp/r", "--password-stdin"], "needs --harbor-url"),
        (
            ["restore", "b.tar", "--root", "/tmp/r", "--harbor-url", "ftp://h", "--password-stdin"],
            "unsupported",
        ),
        (["export", "/tmp", "-o", "/tmp/x.tar", "--volume-size", "100"], "at least 10240 bytes"),
    ],
)
def test_option_mistakes_are_usage_errors_named_by_their_option(args: list[str], needle: str) -> None:
    r = runner.invoke(app, args, input="")
    assert r.exit_code == 2, r.stderr
    assert r.stderr.startswith("error (usage)") and needle in r.stderr.splitlines()[0], r.stderr


def test_registry_urls_as_operators_write_them() -> None:
    from ferry.shared.registry.client import parse_url

    assert parse_url("docker://harbor.example.com") == "https://harbor.example.com"
    assert parse_url("harbor.example.com:8443/") == "https://harbor.example.com:8443"
    assert parse_url("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert parse_url("http://[::1]:5000") == "http://[::1]:5000"


def test_text_from_data_is_printed_literally(capsys: pytest.CaptureFixture[str]) -> None:
    """Names, tags and registry messages are data: no emoji codes (`:link:` was printed as 🔗), no console
    markup, control characters written out."""
    from ferry import render
    from ferry.shared.errors import RegistryError

    render._console.cache_clear()
    render.render_error(
        RegistryError("library/alpine:link: put manifest [bold]x[/bold] tag v1\nnext", hint="see :warning:"),
        as_json=False,
    )
    err = capsys.readouterr().err
    assert "library/alpine:link: put manifest [bold]x[/bold] tag v1\\x0anext" in err
    assert "see :warning:" in err and "🔗" not in err and "⚠" not in err
    render._console.cache_clear()
