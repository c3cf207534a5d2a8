"""The grid operator's alert emitter: raises grid alerts through the chain from a scenario file
or at random intervals, and clears each alert when it expires.

Runs with the grid operator's key (``GRID_OPERATOR_KEY``). A scenario is a JSON file
``{"steps": [{"after_s", "kind", "severity", "region", "message", "duration_s"}, ...]}`` where
``after_s`` counts from the previous step; the kind ``all_clear`` clears every alert this emitter
raised and then raises a short info alert saying so. The random mode draws from a catalogue of
realistic alerts, with intervals uniform between ``min_interval`` and ``max_interval`` seconds.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common.billing import Billing
from common.errors import ChainError, ChainUnavailable
from common.logs import log_event

__all__ = ["AlertSpec", "Scenario", "Emitter", "CATALOGUE", "DEFAULT_REGIONS", "ALL_CLEAR"]

log = logging.getLogger("emitter")

ALL_CLEAR = "all_clear"
DEFAULT_REGIONS = ("north", "south", "east", "west", "")
#: Seconds an "all clear" notice stays on meters' screens.
ALL_CLEAR_NOTICE_S = 120
RETRY_DELAY_S = 2.0


@dataclass(frozen=True)
class AlertSpec:
    """One alert to raise: what, how severe, where, what households read, for how long."""

    kind: str
    severity: int
    region: str
    message: str
    duration_s: float
    after_s: float = 0.0


#: Realistic alerts for the random mode (the region is drawn separately).
CATALOGUE: tuple[AlertSpec, ...] = (
    AlertSpec("frequency_dip", 2, "", "Grid frequency dip: please avoid using heavy appliances for the next "
              "10 minutes", 600),
    AlertSpec("reduce_usage", 1, "", "Demand peak: please reduce your usage between 17:00 and 19:00", 900),
    AlertSpec("maintenance", 0, "", "Planned maintenance on the local network tonight; supply is not expected "
              "to be interrupted", 1800),
    AlertSpec("cheap_power", 0, "", "High wind generation: power is plentiful now, a good time to run the "
              "washing machine", 900),
)


class Scenario:
    """An ordered list of alert steps loaded from JSON."""

    def __init__(self, steps: list[AlertSpec]) -> None:
        self.steps = steps

    @staticmethod
    def load(path: Path) -> Scenario:
        """Read and check a scenario file (ValueError naming the file and step when malformed)."""
        data = json.loads(path.read_text())
        steps = []
        for i, raw in enumerate(data.get("steps", []), start=1):
            try:
                spec = AlertSpec(
                    kind=str(raw["kind"]),
                    severity=int(raw.get("severity", 0)),
                    region=str(raw.get("region", "")),
                    message=str(raw.get("message", "")),
                    duration_s=float(raw.get("duration_s", 300)),
                    after_s=float(raw.get("after_s", 0)),
                )
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{path}: step {i} is malformed: {err}") from err
            if not 0 <= spec.severity <= 2 or spec.duration_s <= 0 or spec.after_s < 0:
                raise ValueError(f"{path}: step {i}: severity must be 0-2, duration_s > 0 and after_s >= 0")
            steps.append(spec)
        return Scenario(steps)


class Emitter:
    """Raises and clears grid alerts; ``sleep`` and ``clock`` are injectable for tests."""

    def __init__(
        self,
        billing: Billing,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        regions: tuple[str, ...] = DEFAULT_REGIONS,
        min_interval: float = 60.0,
        max_interval: float = 180.0,
    ) -> None:
        if not 0 < min_interval <= max_interval:
            raise ValueError("min_interval must be positive and at most max_interval")
        self.billing = billing
        self.rng = rng or random.Random()
        self.clock = clock
        self.sleep = sleep
        self.regions = regions
        self.min_interval = min_interval
        self.max_interval = max_interval
        #: Alerts this emitter raised that are still active: id -> expiry (unix seconds).
        self.active: dict[int, float] = {}
        self.stopping = False

    def raise_alert(self, spec: AlertSpec) -> int | None:
        """Raise one alert (or clear everything for ``all_clear``); None if the chain refused."""
        if spec.kind == ALL_CLEAR:
            self.clear_all()
            spec = AlertSpec(ALL_CLEAR, 0, spec.region, spec.message or "All clear: the grid is back to normal",
                             min(spec.duration_s, ALL_CLEAR_NOTICE_S))
        expires_at = int(self.clock() + spec.duration_s)
        try:
            receipt = self.billing.raise_grid_alert(spec.severity, spec.kind, spec.region, spec.message, expires_at)
        except (ChainError, ChainUnavailable) as err:
            log_event(log, "grid_alert_failed", logging.WARNING, kind=spec.kind, error=str(err)[:200])
            return None
        alert_id = int(self.billing.events("GridAlert", receipt)[0].args.id)
        self.active[alert_id] = expires_at
        log_event(log, "grid_alert_raised", id=alert_id, kind=spec.kind, region=spec.region or "all",
                  severity=spec.severity, expires_at=expires_at, message=spec.message)
        return alert_id

    def clear(self, alert_id: int) -> None:
        """Clear one alert this emitter raised (already cleared counts as done)."""
        try:
            self.billing.clear_grid_alert(alert_id)
            log_event(log, "grid_alert_cleared", id=alert_id)
        except ChainError as err:
            if "AlertNotActive" not in str(err):
                log_event(log, "grid_alert_clear_failed", logging.WARNING, id=alert_id, error=str(err)[:200])
                return
        self.active.pop(alert_id, None)

    def clear_all(self) -> None:
        """Clear every alert this emitter raised that is still active."""
        for alert_id in list(self.active):
            self.clear(alert_id)

    def clear_expired(self) -> None:
        """Clear alerts whose time is up."""
        now = self.clock()
        for alert_id, expires_at in list(self.active.items()):
            if expires_at <= now:
                self.clear(alert_id)

    def wait(self, seconds: float) -> None:
        """Wait, clearing alerts as they expire meanwhile."""
        deadline = self.clock() + seconds
        while not self.stopping:
            self.clear_expired()
            remaining = deadline - self.clock()
            if remaining <= 0:
                return
            next_expiry = min(self.active.values(), default=deadline)
            self.sleep(max(0.05, min(remaining, next_expiry - self.clock(), 1.0)))

    def random_spec(self) -> AlertSpec:
        """Draw an alert from the catalogue for a random region."""
        base = self.rng.choice(CATALOGUE)
        region = self.rng.choice(self.regions)
        message = base.message + (f" (region {region})" if region else "")
        return AlertSpec(base.kind, base.severity, region, message, base.duration_s)

    def next_interval(self) -> float:
        """Seconds until the next random alert."""
        return self.rng.uniform(self.min_interval, self.max_interval)

    def run_scenario(self, scenario: Scenario) -> None:
        """Raise the scenario's alerts at their times."""
        for spec in scenario.steps:
            self.wait(spec.after_s)
            if self.stopping:
                return
            self.raise_alert(spec)

    def run_random(self, until: float | None = None) -> None:
        """Raise random alerts until stopped (or until the clock passes ``until``)."""
        while not self.stopping and (until is None or self.clock() < until):
            interval = self.next_interval()
            if until is not None:
                interval = min(interval, max(0.0, until - self.clock()))
            self.wait(interval)
            if self.stopping or (until is not None and self.clock() >= until):
                return
            if self.raise_alert(self.random_spec()) is None:
                self.sleep(RETRY_DELAY_S)
