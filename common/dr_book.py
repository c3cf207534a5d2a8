"""Every demand-response event, opt-out and credit as the DemandResponse contract's logs tell them: pure, no I/O.

An ``EventBook`` is fed the contract's decoded events in chain order (``DemandResponseEvent``,
``DemandResponseCancelled``, ``OptedOut``, ``OptOutWithdrawn``, ``CreditApplied``) and holds each event's current
terms, target, cancellation, the meters opted out of its current terms (an opt-out is signed for one
modification: a change lapses it) and each meter's credit. The server's demand-response relay keeps
one current as blocks become final; the API builds one from a single read of the contract's logs rather
than several calls per event and meter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.billing import from_text32
from common.dr_terms import Status, Terms, status_at
from common.events import ChainEvent

__all__ = ["BookedCredit", "BookedEvent", "EventBook"]


@dataclass(frozen=True)
class BookedCredit:
    """A meter's credit for an event: micropence, the billing period it went on, baseline and actual Wh."""

    amount: int
    period_id: int
    baseline_wh: int
    actual_wh: int


@dataclass
class BookedEvent:
    """An event as its logs tell it: terms, target, and each meter's part."""

    id: int
    modification: int
    programme: str
    notice_at: int
    terms: Terms
    regions: frozenset[str]
    #: Listed meters, lower case (empty when the event targets regions).
    meters: frozenset[str]
    cancelled: bool = False
    #: Meters opted out of the current terms, lower case.
    opted_out: set[str] = field(default_factory=set)
    #: Meters that withdrew their opt-out of the current terms (they cannot opt out of them again), lower case.
    withdrawn: set[str] = field(default_factory=set)
    #: Lower-case meter -> its credit.
    credits: dict[str, BookedCredit] = field(default_factory=dict)

    def targets(self, meter: str, region: str) -> bool:
        """Whether the event targets this meter (listed by address, or in a listed region)."""
        return meter.lower() in self.meters if self.meters else region in self.regions

    def status(self, now: float) -> Status:
        """The event's status at ``now``."""
        return status_at(self.terms, self.cancelled, now)


class EventBook:
    """The contract's events so far, by id."""

    def __init__(self) -> None:
        self.events: dict[int, BookedEvent] = {}

    def apply(self, event: ChainEvent) -> BookedEvent | None:
        """Take one decoded event (in chain order); returns the event it changed (None: not a DR event)."""
        args = event.args
        name = event.name
        if name == "DemandResponseEvent":
            event_id = int(args["id"])
            old = self.events.get(event_id)
            booked = BookedEvent(
                event_id, int(args["modification"]), from_text32(args["programme"]), int(args["noticeAt"]),
                Terms.from_struct(args["terms"]),
                frozenset(from_text32(r) for r in args["regions"]) if old is None else old.regions,
                frozenset(m.lower() for m in args["meters"]) if old is None else old.meters,
            )
            if old is not None:  # a change keeps its target and credits; opt-outs of the old terms lapse
                booked.credits = old.credits
            self.events[event_id] = booked
            return booked
        if name == "DemandResponseCancelled":
            booked = self.events[int(args["id"])]
            booked.cancelled, booked.modification = True, int(args["modification"])
            return booked
        if name in ("OptedOut", "OptOutWithdrawn"):
            booked = self.events[int(args["eventId"])]
            if int(args["modification"]) == booked.modification:  # always, in chain order
                meter = args["meter"].lower()
                if name == "OptedOut":
                    if meter not in booked.withdrawn:  # a withdrawal (told at once by the relayer) is final
                        booked.opted_out.add(meter)
                else:
                    booked.opted_out.discard(meter)
                    booked.withdrawn.add(meter)
            return booked
        if name == "CreditApplied":
            booked = self.events[int(args["eventId"])]
            booked.credits[args["meter"].lower()] = BookedCredit(int(args["amount"]), int(args["periodId"]),
                                                                 int(args["baselineWh"]), int(args["actualWh"]))
            return booked
        return None
