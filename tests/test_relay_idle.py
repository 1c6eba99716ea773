"""A relay's idle wait between empty claims (engine/relay/executor.py `idle_wait_s`)."""

from __future__ import annotations

import pytest

from engine.relay.executor import idle_wait_s


def test_each_empty_claim_in_a_row_doubles_the_wait_up_to_the_most() -> None:
    waits = [idle_wait_s(n, 0.1, 1.0) for n in range(1, 8)]
    assert waits == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
    assert idle_wait_s(10**6, 0.1, 1.0) == 1.0  # a relay idle for days: no overflow


def test_without_a_back_off_every_wait_is_the_first() -> None:
    assert {idle_wait_s(n, 0.1, 0.1) for n in (1, 2, 50)} == {0.1}  # the online lane
    assert idle_wait_s(0, 0.1, 1.0) == 0.1  # as if it were the first
