"""Picking the newest Ubuntu LTS from what a cloud lists, so no image or release date is hard-coded.

Clouds spell releases differently (`ubuntu-noble-24.04-amd64-server-20250115` on AWS, the family
`ubuntu-2404-lts-amd64` on GCP, the offer `ubuntu-24_04-lts` on Azure); all carry `YY?04`, and an
LTS is an April release of an even year.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")

_RELEASE = re.compile(r"(?<!\d)(\d{2})[._]?(\d{2})(?!\d)")


def lts_release(name: str) -> tuple[int, int] | None:
    """(year, month) of the first Ubuntu release named in `name` if it is an LTS, else None."""
    for match in _RELEASE.finditer(name):
        year, month = int(match[1]), int(match[2])
        if month in (4, 10):
            return (year, month) if month == 4 and year % 2 == 0 else None
    return None


def newest_lts(
    items: Iterable[T], name: Callable[[T], str], built: Callable[[T], str] | None = None
) -> T | None:
    """The item of the newest LTS release; among builds of one release, the latest `built` value."""
    best: tuple[tuple[int, int], str, T] | None = None
    for item in items:
        release = lts_release(name(item))
        if release is None:
            continue
        key = (release, built(item) if built else "")
        if best is None or key > best[:2]:
            best = (key[0], key[1], item)
    return best[2] if best else None
