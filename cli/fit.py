"""Which columns a table shows, and how wide, at a terminal's width.

Three kinds of column, known by their header:
* names and states (NAME, ID, STATUS, ...) are shown whole, always: never cut, wrapped or left out;
* short values that read badly split (a gateway's name, an address, a time) are whole or left out;
* free text (URL, ERROR, ...) wraps, down to a floor.
When the whole table is wider than the terminal, empty columns go first, then free text wraps;
if that is not enough, columns are left out, the least useful first (CREATED, REGION, BACKEND,
...). Piped output has no width (the console's is unbounded there), so scripts always get every
column whole."""

from __future__ import annotations

from collections.abc import Sequence

from rich.cells import cell_len

# Shown whole whatever the width.
ALWAYS = frozenset({"NAME", "ID", "STATUS", "STATE", "USER", "READY", "TYPE"})
# Never wrapped: shown whole or left out.
WHOLE = frozenset(
    {
        "GATEWAY", "HOSTNAME", "ADDRESS", "CREATED", "HEARTBEAT", "EXPIRES", "BACKEND", "REGION",
        "DEFAULT", "ENVOYS", "REPLICAS", "RUNNER", "DOMAIN", "ADMIN", "ROLE", "ISSUER", "VERSION",
    }
)  # fmt: skip
# Left out first when wrapping is not enough; other columns after these, from the right.
LEAST_USEFUL_FIRST = (
    "CREATED", "REGION", "BACKEND", "ENVOYS", "DEFAULT", "RUNNER", "HEARTBEAT", "EXPIRES",
    "CERTIFICATE", "ISSUER", "DOMAIN", "REPLICAS", "GATEWAY", "HOSTNAME", "ADDRESS",
)  # fmt: skip
# Free text wraps down to this many cells (or its header's width, if wider).
WRAP_FLOOR = 16
GAP = 2


def natural_width(header: str, cells: Sequence[Sequence[str]], index: int) -> int:
    return max([cell_len(header), *(cell_len(row[index]) for row in cells)])


def _floor(header: str, natural: int) -> int:
    if header in ALWAYS or header in WHOLE:
        return natural
    return min(natural, max(cell_len(header), WRAP_FLOOR))


def _drop_order(headers: Sequence[str]) -> list[int]:
    ranked = [headers.index(name) for name in LEAST_USEFUL_FIRST if name in headers]
    rest = [index for index in reversed(range(len(headers))) if index not in ranked]
    return [index for index in ranked + rest if headers[index] not in ALWAYS]


def fit(headers: Sequence[str], cells: Sequence[Sequence[str]], width: int) -> tuple[list[int], list[int]]:
    """The indices of the columns to show and every column's width."""
    natural = [natural_width(header, cells, index) for index, header in enumerate(headers)]
    floors = [_floor(header, natural[index]) for index, header in enumerate(headers)]
    shown = list(range(len(headers)))
    droppable = _drop_order(headers)

    def total(widths: Sequence[int]) -> int:
        return sum(widths[index] for index in shown) + GAP * max(0, len(shown) - 1)

    if total(natural) <= width:
        return shown, natural
    # A column with nothing in it (no ERROR anywhere) is the first to go.
    for index in [index for index in droppable if not any(row[index] for row in cells)]:
        shown.remove(index)
        droppable.remove(index)
    if total(natural) <= width:
        return shown, natural
    dropped: list[int] = []
    while total(floors) > width and droppable:
        dropped.append(droppable.pop(0))
        shown.remove(dropped[-1])
    # A column left out on the way may fit again beside the ones that were still too wide.
    for index in reversed(dropped[:-1]):
        shown.append(index)
        shown.sort()
        if total(floors) > width:
            shown.remove(index)
    widths = list(floors)
    spare = width - total(floors)
    # What is left goes to the wrapped columns, in proportion to what each lacks.
    lacking = {index: natural[index] - floors[index] for index in shown if natural[index] > floors[index]}
    wanted = sum(lacking.values())
    if spare > 0 and wanted:
        for index, lack in lacking.items():
            widths[index] += min(lack, spare * lack // wanted)
    return shown, widths
