"""Reads a `*.dstack.yml` configuration file strictly, with errors that point at the file and line:
a size limit, text only (UTF-8, or UTF-16 with its byte-order mark), no duplicate keys, no YAML 1.1
base-60 numbers (`port: 8080:50` is text, not 484850), no alias bombs. dstack's `- KEY` in `env`
takes the variable from this shell, as dstack's CLI does."""

from __future__ import annotations

import codecs
import json
import os
import re
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, SequenceNode

from cli.config import UsageError
from gatehouse import limits

SUFFIX = ".dstack.yml"
# Nodes a document may expand to through its aliases (`&a [*b, *b, ...]`).
MAX_NODES = 100_000
INT = "tag:yaml.org,2002:int"
FLOAT = "tag:yaml.org,2002:float"
MERGE = "tag:yaml.org,2002:merge"
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _DuplicateKey(ConstructorError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping and reads no base-60 numbers."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in (INT, FLOAT)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line)
            except TypeError:
                continue  # an unhashable key: SafeLoader says so itself
            if first != key_node.start_mark.line:
                raise _DuplicateKey(
                    None, None, f"`{key}` is given twice (first on line {first + 1})", key_node.start_mark
                )
        return super().construct_mapping(node, deep)


_StrictLoader.add_implicit_resolver(
    INT,
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_StrictLoader.add_implicit_resolver(
    FLOAT,
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _expanded(node: Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """How many nodes `node` becomes once every alias is followed."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise UsageError("a YAML alias refers to itself")
    open_nodes.add(key)
    total = 1
    if isinstance(node, SequenceNode):
        total += sum(_expanded(item, sizes, open_nodes) for item in node.value)
    elif isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            total += _expanded(key_node, sizes, open_nodes) + _expanded(value_node, sizes, open_nodes)
    if total > MAX_NODES:
        raise UsageError(f"it expands to more than {MAX_NODES:,} values through its aliases")
    open_nodes.discard(key)
    sizes[key] = total
    return total


def _parse(text: str) -> Any:
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded(node, {}, set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _read_text(path_text: str) -> str:
    path = Path(path_text)
    try:
        with path.open("rb") as file:
            raw = file.read(limits.CONFIGURATION_FILE_BYTES + 1)
            if len(raw) > limits.CONFIGURATION_FILE_BYTES:
                size = os.fstat(file.fileno()).st_size
                shown = limits.size(size) if size > len(raw) else f"over {limits.size(len(raw) - 1)}"
                raise UsageError(
                    f"{path_text}: the file is {shown}: a configuration is at most "
                    f"{limits.size(limits.CONFIGURATION_FILE_BYTES)}"
                )
    except FileNotFoundError:
        raise UsageError(f"{path_text}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path_text}: is a directory, not a configuration file") from None
    except OSError as error:
        raise UsageError(f"{path_text}: cannot read it: {error.strerror}") from None
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError:
            raise UsageError(f"{path_text}: not valid UTF-16 text: save it as UTF-8") from None
    if b"\x00" in raw:
        raise UsageError(f"{path_text}: not a text file (it holds binary data): expected YAML")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise UsageError(
            f"{path_text}:{line}: not UTF-8 text (byte 0x{raw[error.start]:02x}): save the file as UTF-8"
        ) from None


def read_yaml_mapping(path_text: str, what: str = "a mapping") -> dict[str, Any]:
    """A YAML file holding one mapping, with errors that point at the file and line."""
    text = _read_text(path_text)
    try:
        data = _parse(text)
    except _DuplicateKey as error:
        mark = error.problem_mark
        raise UsageError(f"{path_text}:{mark.line + 1 if mark else '?'}: {error.problem}") from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"{path_text}:{mark.line + 1}" if mark is not None else path_text
        line = text.splitlines()[mark.line] if mark is not None and mark.line < len(text.splitlines()) else ""
        hint = (
            " (inside [ ] or { }, quote a value with ${{ }} in it: '${{ secrets.X }}', "
            "or write one `- item` a line)"
            if "${{" in line and ("[" in line or "{" in line.split("${{")[0])
            else ""
        )
        raise UsageError(f"{where}: invalid YAML: {error.problem}{hint}") from None
    except yaml.YAMLError as error:
        raise UsageError(f"{path_text}: invalid YAML: {' '.join(str(error).split())}") from None
    except UsageError as error:
        raise UsageError(f"{path_text}: {error}") from None
    except RecursionError:
        raise UsageError(f"{path_text}: nested too deeply") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path_text}: expected {what}" + ("; the file is empty" if data is None else ""))
    try:
        # Values YAML reads as dates or times travel as the text written.
        return json.loads(json.dumps(data, default=str))  # type: ignore[no-any-return]
    except (TypeError, ValueError, RecursionError) as error:
        raise UsageError(f"{path_text}: {error}") from None


def _from_shell(path_text: str, name: str, pass_through: bool) -> str:
    """dstack's `- KEY`: the value of KEY in this shell."""
    if not ENV_NAME.match(name):
        raise UsageError(f"{path_text}: `env`: {name!r} is not a variable name")
    value = os.environ.get(name)
    if value is None and pass_through:
        raise UsageError(
            f"{path_text}: `env`: {name} is not set in this shell: export {name}=... first, "
            f"or write {name}=VALUE in the file"
        )
    return value or ""


def pass_env_through(path_text: str, data: dict[str, Any], pass_through: bool = True) -> None:
    """Fills `- KEY` (and `KEY:` with no value) in a service's `env` from this shell's environment.
    Without `pass_through` (to find a service to delete) a missing variable is left empty."""
    env = data.get("env")
    if data.get("type") != "service" or env is None:
        return
    if isinstance(env, list):
        data["env"] = [
            f"{item.strip()}={_from_shell(path_text, item.strip(), pass_through)}"
            if isinstance(item, str) and "=" not in item
            else item
            for item in env
        ]
    elif isinstance(env, dict):
        for key, value in env.items():
            if value is None:
                env[key] = _from_shell(path_text, str(key), pass_through)


def load_configuration(path_text: str, pass_through: bool = True) -> tuple[dict[str, Any], str]:
    """The configuration as data, and its source (the absolute path) that finds it again."""
    path = Path(path_text)
    if not path.name.endswith(SUFFIX):
        raise UsageError(
            f"{path_text}: the file name must end with {SUFFIX} (for example gateway{SUFFIX} or {SUFFIX})"
        )
    data = read_yaml_mapping(path_text, what="a configuration (`type: gateway` or `type: service`)")
    if data.get("type") not in ("gateway", "service"):
        shown = "missing" if data.get("type") is None else repr(data.get("type"))
        raise UsageError(f"{path_text}: `type` must be gateway or service, not {shown}")
    pass_env_through(path_text, data, pass_through)
    return data, str(path.resolve())
