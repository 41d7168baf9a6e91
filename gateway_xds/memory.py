"""The process's memory: handing freed C heap back to the system, and keeping the garbage collector
off the long-lived state."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable


def _load_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc
        return None
    if trim is not None:
        trim.argtypes = [ctypes.c_size_t]
        trim.restype = ctypes.c_int
    return trim


_malloc_trim = _load_malloc_trim()


def release_free_heap() -> bool:
    """Return the C heap's free pages to the system; False where the C library cannot."""
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True


def freeze_long_lived() -> None:
    """Exempt every object alive now from future collections.

    With 10,000 services the registry's mirror, the gateways' IR and their snapshots are millions of
    objects, and each full collection walked all of them on the thread that serves xDS. Called once
    that state is built (after a resync); what is frozen is still freed when no longer referenced,
    only reference cycles among it would stay, so a collection runs first.
    """
    gc.collect()
    gc.freeze()
