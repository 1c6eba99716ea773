"""The cyclic garbage collector, set for a long-running server process.

Measured in the engine's worker under a saturated drawdown loop (CPU time of the
collections, `gc.callbacks`, 25 s; BENCHMARKS.md, fourth round):

    default (700, 10, 10)          ~560 young collections of 0.7 ms each, and a full
                                   collection every ~6 s of about 45 ms that stops
                                   every request in flight: ~50 µs per request
    startup frozen, (7000, 10, 10) 7 young collections and no full one in 30 s (the
                                   one full collection is this module's, at startup)

The thresholds count tracked objects allocated net of those freed: with a few dozen
requests in flight their live objects alone crossed 700 again and again, so most
young collections found nothing. 7,000 still bounds what cyclic garbage can pile
up between collections. Freezing what startup built (modules, the app, reference
data, pools) keeps full collections from walking it again and again.
"""

from __future__ import annotations

import gc
from typing import Final

THRESHOLDS: Final = (7000, 10, 10)


def settle_after_startup() -> None:
    """Call once the process has built what it keeps for its lifetime."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
