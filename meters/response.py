"""How a simulated household answers demand-response events: pure rules, no I/O.

While an event it takes part in is active, the household defers flexible load (EV charging, heating,
the washing machine) in proportion to the signal, which scales its demand by ``event_factor``: level 1
by 0.85, level 2 by 0.70, level 3 by 0.55; a price signal by one minus the price over
``PRICE_FOR_MOST`` (at 5.00 p/kWh and above the most it can do), never below ``MOST_REDUCTION``'s floor.
Deferred load is shifted, not lost: for as long as the event lasted after it ends, demand runs higher
by ``REBOUND_SHARE`` of what was cut (the rest was comfort given up: a cooler room, a later wash).

Whether a household opts out of an event is drawn once per (meter, event) from ``opt_out_rate``, so a
restarted meter decides the same way, and so does a meter told of a changed event (whose change lapsed the
opt-out it signed for the old terms: it signs the new ones).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from common.dr_terms import Signal, Status, Terms, status_at

__all__ = ["LEVEL_FACTORS", "PRICE_FOR_MOST", "MOST_REDUCTION", "REBOUND_SHARE", "event_factor", "demand_factor",
           "wants_opt_out"]

#: Demand scale while an event of each signal level is active.
LEVEL_FACTORS = {0: 1.0, 1: 0.85, 2: 0.70, 3: 0.55}
#: The most a household cuts (its flexible share), reached at level 3 or at ``PRICE_FOR_MOST``.
MOST_REDUCTION = 0.45
#: A price signal (millipence per kWh) at or above which the household cuts all it can.
PRICE_FOR_MOST = 500_000
#: Share of the deferred load that comes back after the event, spread over as long as the event lasted.
REBOUND_SHARE = 0.5


def event_factor(terms: Terms) -> float:
    """The demand scale while an event with these terms is active."""
    if terms.signal_kind is Signal.PRICE:
        return 1.0 - MOST_REDUCTION * min(1.0, terms.signal_value / PRICE_FOR_MOST)
    return LEVEL_FACTORS.get(terms.signal_value, 1.0 - MOST_REDUCTION)


def demand_factor(events: Iterable[tuple[Terms, bool]], now: float) -> float:
    """The household's demand scale at ``now`` from the events it takes part in: (terms, cancelled) pairs.

    The deepest cut of any active event; else the largest rebound of an event that ended less than its
    own duration ago; else 1.
    """
    cut, rebound = 1.0, 1.0
    for terms, cancelled in events:
        status = status_at(terms, cancelled, now)
        if status is Status.ACTIVE:
            cut = min(cut, event_factor(terms))
        elif status is Status.COMPLETED and now < terms.end + terms.duration:
            rebound = max(rebound, 1.0 + REBOUND_SHARE * (1.0 - event_factor(terms)))
    return cut if cut < 1.0 else rebound


def wants_opt_out(meter: str, event_id: int, rate: float) -> bool:
    """Whether this household opts out of this event, drawn once from ``rate`` (0: never, 1: always)."""
    if rate <= 0:
        return False
    digest = hashlib.sha256(f"{meter.lower()}:{event_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate
