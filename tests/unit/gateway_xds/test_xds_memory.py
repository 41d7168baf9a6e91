"""What gateway_xds does about its process's memory."""

import gc

from gateway_xds.memory import freeze_long_lived, release_free_heap


def test_long_lived_objects_leave_the_collectors_generations() -> None:
    kept = [{"service": index} for index in range(1000)]
    try:
        freeze_long_lived()
        assert gc.get_freeze_count() >= len(kept)
    finally:
        gc.unfreeze()


def test_the_heap_can_be_trimmed_here() -> None:
    # glibc on the machines Gatehouse runs on; elsewhere the bulk gate only limits concurrency.
    assert release_free_heap() is True
