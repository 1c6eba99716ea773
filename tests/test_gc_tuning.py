"""The engine's worker and the relay settle the collector after startup: what
startup built is frozen out of full collections, and young collections wait for
7,000 net allocations (engine/gc_tuning.py). Run in a child process: the test
runner's own collector is left alone."""

from __future__ import annotations

import subprocess
import sys


def test_settle_after_startup_freezes_and_raises_the_thresholds() -> None:
    code = (
        "import gc; from engine.runtime import gc_tuning; "
        "kept = [[n] for n in range(1000)]; "
        "gc_tuning.settle_after_startup(); "
        "print(gc.get_freeze_count() >= 1000, gc.get_threshold() == gc_tuning.THRESHOLDS)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["True", "True"]
