"""The `lictor` entry point loads only the command it runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lictor.cli.main import COMMANDS, build_parser, columns

SERVER_MODULES = ("fastapi", "uvicorn", "lictor.server.app")


def loaded_after(code: str) -> set[str]:
    """The modules ``code`` loads in a fresh interpreter (not those its start loaded,
    which depend on how the package is installed)."""
    probe = f"import sys\nstarted = set(sys.modules)\n{code}\n"
    probe += "print(' '.join(sorted(set(sys.modules) - started)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


@pytest.mark.parametrize("argv", [["run", "--help"], ["exec", "list"], ["--version"]])
def test_a_client_command_does_not_load_the_server(argv: list[str]) -> None:
    loaded = loaded_after(f"from lictor.cli.main import build_parser; build_parser({argv!r})")
    assert not loaded.intersection(SERVER_MODULES)


def test_the_version_loads_no_command() -> None:
    loaded = loaded_after("from lictor.cli.main import build_parser; build_parser(['--version'])")
    assert not {f"lictor.cli.{module}" for module in COMMANDS.values()} & loaded


def test_help_and_an_unknown_command_see_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser(["nonsense"]).parse_args(["nonsense"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert all(f"'{command}'" in error for command in COMMANDS)


def test_each_command_is_registered_by_its_module(capsys: pytest.CaptureFixture[str]) -> None:
    for command in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            build_parser([command, "--help"]).parse_args([command, "--help"])
        assert exit_info.value.code == 0
        usage = capsys.readouterr().out.split("\n", 1)[0].split()
        assert usage[:3] == ["usage:", "lictor", command]


def test_governing_a_command_does_not_load_the_receipt_verifier() -> None:
    loaded = loaded_after("import lictor.cli.run")
    assert "lictor.sdk.verify" not in loaded and "lictor.audit" not in loaded
    loaded = loaded_after("from lictor.sdk import VerifiedReceipt, verify_receipt")
    assert "lictor.sdk.verify" in loaded  # loaded when asked for


HEAVY_CLIENT_MODULES = (
    *("httpx", "msgspec", "pydantic", "fastapi", "asyncio"),
    *("http.client", "email", "ssl"),  # `lictor.sdk.http11` reads the replies, TLS only for https
    "pathlib",  # about 8 ms: `lictor run` reads its files with open() and os.path
)


@pytest.mark.parametrize(
    "code",
    [
        "import lictor.sdk",
        "from lictor.cli.main import build_parser; build_parser(['run', '--', 'true'])",
        "from lictor.cli.main import build_parser; build_parser(['exec', 'list'])",
    ],
)
def test_a_governed_command_loads_no_http_or_schema_library(code: str) -> None:
    """`lictor run` starts its command within tens of milliseconds only if it leaves
    these out: their imports alone took longer (ADR 11; `http.client` and the
    `email` package it loads, about 19 ms)."""
    assert not loaded_after(code).intersection(HEAVY_CLIENT_MODULES)


def test_lictor_run_loads_its_command_shell_before_the_sdk_and_never_typing() -> None:
    """Before its command's shell is started (`lictor.supervise.Pending`), `lictor run`
    loads neither the SDK (whose imports overlap the shell joining its cgroup) nor
    argparse's `shutil`; and the SDK itself loads no `typing` or `hashlib` (3 ms each),
    `urllib.parse` (2.5 ms with `ipaddress`), `random` or `subprocess`."""
    before_shell = loaded_after(
        "from lictor.cli.main import build_parser; build_parser(['run', '--', 'true'])"
    )
    assert not before_shell & {"lictor.sdk", "lictor.sdk.client", "shutil", "typing", "json"}
    with_sdk = loaded_after(
        "from lictor.cli.main import build_parser; build_parser(['run', '--', 'true'])\n"
        "import lictor.sdk"
    )
    assert "lictor.sdk.client" in with_sdk
    assert not with_sdk & {"typing", "hashlib", "shutil", "urllib.parse", "random", "subprocess"}


def test_the_async_client_loads_httpx_when_asked_for() -> None:
    assert "httpx" in loaded_after("from lictor.sdk import AsyncClient")


@pytest.mark.parametrize("given", ["50", "0", "wide"])
def test_help_is_as_wide_as_argparse_would_make_it(
    given: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Formatter` finds the width as `shutil.get_terminal_size` would (without loading it)."""
    import shutil

    monkeypatch.setenv("COLUMNS", given)
    assert columns() == shutil.get_terminal_size().columns
