"""Configuration files are read strictly, and every refusal is one line naming the file (and line)."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from cli.config import UsageError
from cli.loader import load_configuration, read_yaml_mapping
from gatehouse import limits


def _write(tmp_path: Path, content: str | bytes, name: str = "s.dstack.yml") -> str:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return str(path)


def _refused(path: str) -> str:
    with pytest.raises(UsageError) as caught:
        load_configuration(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(path), message
    return message


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, "type: service\nport: 8000\nname: a\nport: 9000\n")
    assert _refused(path) == f"{path}:4: `port` is given twice (first on line 2)"


def test_nested_duplicates_and_merge_keys(tmp_path: Path) -> None:
    path = _write(tmp_path, "type: service\nport: 80\nscaling:\n  metric: rps\n  metric: rps\n")
    assert _refused(path) == f"{path}:5: `metric` is given twice (first on line 4)"
    merged = _write(
        tmp_path, "base: &b {port: 80}\nsvc:\n  <<: *b\n  name: x\ntype: service\n", "m.dstack.yml"
    )
    assert load_configuration(merged)[0]["svc"] == {"port": 80, "name": "x"}


def test_a_binary_file_is_not_a_traceback(tmp_path: Path) -> None:
    path = _write(tmp_path, bytes(range(256)) * 20)
    assert _refused(path) == f"{path}: not a text file (it holds binary data): expected YAML"


def test_latin1_is_named_with_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "type: service\nname: caf\xe9\n".encode("latin-1"))
    assert _refused(path) == f"{path}:2: not UTF-8 text (byte 0xe9): save the file as UTF-8"


@pytest.mark.parametrize(
    "encoded",
    [
        codecs.BOM_UTF8 + b"type: service\nport: 8000\n",
        "type: service\nport: 8000\n".encode("utf-16"),  # with its byte-order mark
    ],
)
def test_utf8_with_a_bom_and_utf16_are_read(tmp_path: Path, encoded: bytes) -> None:
    assert load_configuration(_write(tmp_path, encoded))[0] == {"type": "service", "port": 8000}


def test_a_huge_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    # The 5 MB configuration: 46,000 env entries.
    lines = "".join(f"  VAR_{index}: {'x' * 100}\n" for index in range(46_000))
    path = _write(tmp_path, "type: service\nport: 8000\nenv:\n" + lines)
    assert _refused(path) == f"{path}: the file is 5 MiB: a configuration is at most 1 MiB"
    assert limits.CONFIGURATION_FILE_BYTES > limits.CONFIGURATION_BYTES


def test_an_alias_bomb_is_refused(tmp_path: Path) -> None:
    text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for name, previous in zip("bcdef", "abcde", strict=True):
        text += f"{name}: &{name} [{', '.join(['*' + previous] * 10)}]\n"
    path = _write(tmp_path, text + "type: service\n")
    assert _refused(path) == f"{path}: it expands to more than 100,000 values through its aliases"


def test_no_base_60_numbers(tmp_path: Path) -> None:
    """YAML 1.1 reads 8080:50 as 484850; a port mapping is meant."""
    data, _ = load_configuration(_write(tmp_path, "type: service\nport: 8080:50\nrps: 1.5\nn: 0x1F\n"))
    assert data == {"type": "service", "port": "8080:50", "rps": 1.5, "n": 31}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "expected a configuration (`type: gateway` or `type: service`); the file is empty"),
        ("- a\n- b\n", "expected a configuration"),
        ("type: job\n", "`type` must be gateway or service, not 'job'"),
        ("name: x\n", "`type` must be gateway or service, not missing"),
        ("type: service\nport: [1,\n", "invalid YAML"),
        ("type: service\n\tport: 1\n", "invalid YAML"),
        ("type: service\nx: " + "[" * 2000 + "]" * 2000 + "\n", "nested too deeply"),
    ],
)
def test_other_bad_files(tmp_path: Path, content: str, expected: str) -> None:
    assert expected in _refused(_write(tmp_path, content))


def test_missing_and_directories(tmp_path: Path) -> None:
    assert _refused(str(tmp_path / "nope.dstack.yml")).endswith(": no such file")
    (tmp_path / "dir.dstack.yml").mkdir()
    assert _refused(str(tmp_path / "dir.dstack.yml")).endswith(": is a directory, not a configuration file")


def test_dstack_env_list_passes_variables_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf-123")
    monkeypatch.setenv("FROM_SHELL", "yes")
    path = _write(
        tmp_path,
        "type: service\nport: 8000\nenv:\n  - MODE=prod\n  - TOKEN=${{ secrets.T }}\n  - HF_TOKEN\n",
    )
    assert load_configuration(path)[0]["env"] == ["MODE=prod", "TOKEN=${{ secrets.T }}", "HF_TOKEN=hf-123"]
    mapping = _write(tmp_path, "type: service\nport: 8000\nenv:\n  FROM_SHELL:\n  A: b\n", "m.dstack.yml")
    assert load_configuration(mapping)[0]["env"] == {"FROM_SHELL": "yes", "A": "b"}


def test_a_variable_missing_from_the_shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_HERE", raising=False)
    path = _write(tmp_path, "type: service\nport: 8000\nenv:\n  - NOT_SET_HERE\n")
    assert _refused(path) == (
        f"{path}: `env`: NOT_SET_HERE is not set in this shell: export NOT_SET_HERE=... first, "
        "or write NOT_SET_HERE=VALUE in the file"
    )
    # Finding the service to delete needs no value.
    assert load_configuration(path, pass_through=False)[0]["env"] == ["NOT_SET_HERE="]


def test_backend_files_are_read_as_strictly(tmp_path: Path) -> None:
    path = _write(tmp_path, "type: aws\ntype: gcp\n", "aws.yml")
    with pytest.raises(UsageError, match=r"aws.yml:2: `type` is given twice"):
        read_yaml_mapping(path)


def test_a_secret_in_a_flow_list_says_to_quote_it(tmp_path: Path) -> None:
    """The issue's `env: [MODE=prod, TOKEN=${{ secrets.T }}]` is not YAML: `{` opens a mapping."""
    path = _write(tmp_path, "type: service\nport: 8000\nenv: [MODE=prod, TOKEN=${{ secrets.T }}]\n")
    message = _refused(path)
    assert message.startswith(f"{path}:3: invalid YAML: ") and "quote a value with ${{ }} in it" in message
    quoted = _write(
        tmp_path, "type: service\nport: 8000\nenv: [MODE=prod, 'TOKEN=${{ secrets.T }}']\n", "q.dstack.yml"
    )
    assert load_configuration(quoted)[0]["env"] == ["MODE=prod", "TOKEN=${{ secrets.T }}"]
