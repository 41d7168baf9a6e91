"""Which resources of a rejected response Envoy refused, read from its error message.

Envoy applies a response's resources one by one and NACKs it with the failures in one message, each
after its resource's name: "Error adding/updating listener(s) port-5001: cannot bind
'127.0.0.2:5001': Address already in use, port-5003: ...". The response's names found in the message
are the refused ones (the others were applied); a message that names none of them refuses them all.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

from gateway_xds.server.reporter import Rejection

# What a resource name is made of here: a name is found only as a whole word of these.
_WORD = re.compile(r"[\w.\-]+")
_SEPARATORS = " ,;\n"


def refused(type_url: str, answered: Mapping[str, str | None], message: str) -> dict[str, Rejection]:
    """The resources of a response (name -> version sent, None for a removal) Envoy refused."""
    found = _named(answered.keys(), message)
    if not found:
        return {
            name: Rejection(type_url, name, version, message, message) for name, version in answered.items()
        }
    reasons = _reasons(found, message)
    return {name: Rejection(type_url, name, answered[name], reasons[name], message) for name in found}


def _named(names: Collection[str], message: str) -> dict[str, tuple[int, bool]]:
    """name -> (where the message first names it, whether `<name>: <reason>` follows there). Names
    followed by a colon win over names merely mentioned (a reason may mention `http`)."""
    first: dict[str, tuple[int, bool]] = {}
    for match in _WORD.finditer(message):
        word = match.group()
        if word in first or word not in names:
            continue
        first[word] = (match.start(), message.startswith(":", match.end()))
    for name in names:
        if name in first or _WORD.fullmatch(name):
            continue
        # A name with other characters: found where no name character touches it.
        at = re.search(rf"(?<![\w.\-]){re.escape(name)}(?![\w.\-])", message)
        if at is not None:
            first[name] = (at.start(), message.startswith(":", at.end()))
    labelled = {name: place for name, place in first.items() if place[1]}
    return labelled or first


def _reasons(found: Mapping[str, tuple[int, bool]], message: str) -> dict[str, str]:
    """Each name's part of the message: from after `<name>: ` to where the next name's part begins;
    a name only mentioned gets the whole message."""
    if not all(labelled for _, labelled in found.values()):
        return {name: message for name in found}
    ordered = sorted(found, key=lambda name: found[name][0])
    reasons = {}
    for index, name in enumerate(ordered):
        start = found[name][0] + len(name) + 1
        end = found[ordered[index + 1]][0] if index + 1 < len(ordered) else len(message)
        reasons[name] = message[start:end].strip(_SEPARATORS) or message
    return reasons
