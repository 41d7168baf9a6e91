"""Which writes a registry copy has heard of: numbers may be heard out of order, and one taken by a
write that never committed is given up on after a while."""

from __future__ import annotations

from services.registry.write_notices import GAP_SECONDS, Watermark


def test_numbers_heard_out_of_order_advance_only_when_contiguous() -> None:
    mark = Watermark(10)
    mark.heard(12)
    assert mark.value == 10
    assert mark.caught_up(12, now=0.0) == (False, False)
    mark.heard(11)
    assert mark.value == 12
    assert mark.caught_up(12, now=0.1) == (True, False)


def test_a_number_never_heard_is_given_up_on_after_the_gap() -> None:
    mark = Watermark(5)
    mark.heard(7)
    assert mark.caught_up(7, now=100.0) == (False, False)
    assert mark.caught_up(7, now=100.0 + GAP_SECONDS / 2) == (False, False)
    # 6 rolled back: after the gap the copy stops waiting for it and says what it skipped.
    assert mark.caught_up(7, now=100.0 + GAP_SECONDS) == (True, True)
    assert mark.value == 7


def test_numbers_taken_after_the_gap_began_are_still_waited_for() -> None:
    mark = Watermark(0)
    assert mark.caught_up(2, now=0.0) == (False, False)
    mark.heard(1)
    # 3 was taken later and is not heard yet: giving up on 2 does not give up on 3.
    assert mark.caught_up(3, now=GAP_SECONDS + 0.1) == (False, True)
    assert mark.value == 2
    mark.heard(3)
    assert mark.caught_up(3, now=GAP_SECONDS + 0.2) == (True, False)
