"""Readable generated names and opaque ids."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection

ADJECTIVES = (
    "fast", "calm", "brave", "bright", "quiet", "eager", "gentle", "keen", "lucky", "merry",
    "proud", "quick", "sharp", "smart", "sunny", "swift", "tidy", "vivid", "witty", "bold",
)  # fmt: skip
ANIMALS = (
    "walrus", "otter", "falcon", "badger", "heron", "lynx", "marten", "panda", "puffin", "raven",
    "seal", "tapir", "wombat", "yak", "zebra", "bison", "crane", "gecko", "ibis", "koala",
)  # fmt: skip


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


def readable_name(
    prefix: str, taken: Collection[str], choice: Callable[[tuple[str, ...]], str] | None = None
) -> str:
    """`<prefix>fast-walrus`, not in `taken`; a numeric suffix once the words run out."""
    pick = choice or secrets.choice
    for _ in range(50):
        name = f"{prefix}{pick(ADJECTIVES)}-{pick(ANIMALS)}"
        if name not in taken:
            return name
    index = 1
    while True:
        name = f"{prefix}{pick(ADJECTIVES)}-{pick(ANIMALS)}-{index}"
        if name not in taken:
            return name
        index += 1
