"""The command line as people type it, with no server: flags anywhere, usage errors (exit 2) for
commands missing what they need, Ctrl-C at a question, a reader that leaves the pipe, completion of
file names, and the token command that the hint after a URL uses."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cli.main import build_parser
from tests.support.server import GATEHOUSE

NO_SERVER = {"GATEHOUSE_TOKEN": "gh_test", "GATEHOUSE_SERVER": "127.0.0.1:1"}


def _gatehouse(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GATEHOUSE, *args],
        env={**os.environ, "GATEHOUSE_HOME": str(tmp_path / "home"), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["secrets", "add", "GATEWAY_IP", "1.2.3.4", "--project", "local"],  # seed 004, as printed
        ["secrets", "add", "--project", "local", "GATEWAY_IP", "1.2.3.4"],
        ["--project", "local", "secrets", "add", "GATEWAY_IP", "1.2.3.4"],
        ["secrets", "--project", "local", "add", "GATEWAY_IP", "1.2.3.4"],
    ],
)
def test_project_and_server_flags_anywhere(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert args.project == "local" and args.field_name == "GATEWAY_IP" and args.field_value == "1.2.3.4"


def test_the_last_project_flag_wins_and_none_leaves_the_default() -> None:
    assert build_parser().parse_args(["gateway", "list"]).project is None
    args = build_parser().parse_args(
        ["--project", "a", "gateway", "list", "--project", "b", "--server", "h:1"]
    )
    assert (args.project, args.server) == ("b", "h:1")
    applied = build_parser().parse_args(["apply", "-f", "x.dstack.yml", "--project", "local", "-y"])
    assert applied.project == "local" and applied.yes


def test_seed_004s_run_form() -> None:
    args = build_parser().parse_args(["run", ".", "-f", "service.dstack.yml", "--project", "local"])
    assert (args.top, args.directory, args.file, args.project) == ("run", ".", "service.dstack.yml", "local")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["replica", "register"], "error: the following arguments are required: --service, --id, --address"),
        (["backend", "add"], "error: the following arguments are required: --config"),
        (["gateway", "update", "gw"], "error: nothing to change: pass --set-default"),
        (["gateway", "create", "--backend"], "error: argument --backend: expected one argument"),
        (["apply"], "error: the following arguments are required: -f/--file"),
        (["gateway"], None),  # the default command: reaches for the server (exit 1)
    ],
)
def test_usage_errors_exit_2_with_one_line(tmp_path: Path, argv: list[str], expected: str | None) -> None:
    done = _gatehouse(tmp_path, *argv, env=NO_SERVER)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    if expected is None:
        assert done.returncode == 1 and "cannot reach the Gatehouse server" in lines[0]
    else:
        assert done.returncode == 2 and lines[0].startswith(expected), lines[0]


def test_ctrl_c_at_a_question_ends_at_once(tmp_path: Path) -> None:
    with subprocess.Popen(
        [GATEHOUSE, "gateway", "delete", "gw"],
        env={**os.environ, "GATEHOUSE_HOME": str(tmp_path), **NO_SERVER},
        stdin=subprocess.PIPE,  # open, and nothing typed
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        shown = b""
        deadline = time.monotonic() + 30
        while b"[y/n]: " not in shown and time.monotonic() < deadline:
            if select.select([process.stdout], [], [], 0.1)[0]:
                shown += os.read(process.stdout.fileno(), 200)
        assert shown == b"Delete the gateway gw? [y/n]: "
        interrupted = time.monotonic()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=5) == 130
        assert time.monotonic() - interrupted < 3
        assert process.stderr.read() == b"" and process.stdout.read() == b"\n"


def test_no_answer_on_stdin_is_one_line(tmp_path: Path) -> None:
    done = _gatehouse(tmp_path, "gateway", "delete", "gw", env=NO_SERVER)
    assert done.returncode == 2
    assert done.stderr == "error: no answer on standard input: pass -y to answer yes\n"


def test_a_reader_that_leaves_the_pipe_gets_no_traceback(tmp_path: Path) -> None:
    """`gatehouse ... | head -1`: the reader is gone before the output is written."""
    read_end, write_end = os.pipe()
    with subprocess.Popen(
        [GATEHOUSE, "completion", "bash"],
        env={**os.environ, "GATEHOUSE_HOME": str(tmp_path)},
        stdout=write_end,
        stderr=subprocess.PIPE,
    ) as process:
        os.close(write_end)
        os.close(read_end)
        assert process.stderr is not None
        assert process.wait(timeout=60) == 141
        assert process.stderr.read() == b""


def test_f_completes_file_names(tmp_path: Path) -> None:
    script = _gatehouse(tmp_path, "completion", "bash").stdout
    (tmp_path / "completion.sh").write_text(script)
    for name in ("gateway.dstack.yml", "gamma.txt", "other.dstack.yml"):
        (tmp_path / name).write_text("")
    for line in ("gatehouse apply -f ga", "gatehouse delete --file ga", "gatehouse backend add --config ga"):
        words = line.split()
        probe = (
            f"source completion.sh; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; "
            f'COMP_LINE="{line}"; COMP_POINT=${{#COMP_LINE}}; '
            f'_shtab_gatehouse gatehouse {words[-1]} {words[-2]}; printf "%s\\n" "${{COMPREPLY[@]}}"'
        )
        done = subprocess.run(["bash", "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert sorted(done.stdout.split()) == ["gamma.txt", "gateway.dstack.yml"], (line, done.stderr)


def test_token_prints_the_clis_token(tmp_path: Path) -> None:
    done = _gatehouse(tmp_path, "token", env={"GATEHOUSE_TOKEN": "gh_abc"})
    assert (done.returncode, done.stdout) == (0, "gh_abc\n")
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.yml").write_text("token: gh_from_config\nserver: 127.0.0.1:1\n")
    (home / "config.yml").chmod(0o600)
    done = _gatehouse(tmp_path, "token", env={"GATEHOUSE_TOKEN": ""})
    assert (done.returncode, done.stdout, done.stderr) == (0, "gh_from_config\n", "")
