"""The grid operator's alert emitter: raises grid alerts through the chain, from a scenario file or
at random, and clears each one when it expires so meters see alerts arrive and lapse.

Alerts are sent with the grid operator's key (``GRID_OPERATOR_KEY``) through ``Billing``. The
drawing of random alerts (``RandomAlerts``) and the parsing of scenarios (``Scenario``) do no I/O;
``Emitter`` is the thin loop around them that talks to the chain and waits, with an injectable
clock and sleep so tests run a scenario's minutes in a moment.

Scenario files are JSON: either a list of steps or ``{"steps": [...]}``, each step
``{"after_s", "kind", "severity", "region", "message", "duration_s"}``. ``after_s`` counts from the
previous step (from the start for the first), so steps are played in file order. A step of kind
``all_clear`` clears every alert this emitter raised that is still active and then raises an info
alert saying so (its severity is always 0), so households see the all-clear on their screens.
A step of kind ``day_ahead_prices`` publishes the next local day's half-hourly import and export
prices (Agile-like, ``operations.tariffs.agile_like_prices``) with the operator's key
(``OPERATOR_KEY``: prices are the supplier's to set), for tariff versions that use day-ahead
prices, then tells households with an info alert naming the cheapest and dearest hours.
A step of kind ``demand_response`` creates a demand-response event on chain (``DemandResponse``, the
grid operator's key) for the step's region (every meter's region when empty): half an hour from the
next half hour at least ``DR_NOTICE_S`` ahead, at a signal level of the step's severity + 1, paying
``DR_CREDIT_RATE``; then it tells households with a warning naming the event, its time and how to opt out.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from eth_account import Account
from web3.exceptions import Web3Exception

from common.backoff import backoff_delay
from common.billing import Billing
from common.demand_response import DemandResponse, Signal, Status, Terms
from common.errors import ChainError, ChainUnavailable, ConfigError, DeploymentMissing, InvalidRequest
from common.logs import log_event
from operations.demand_response import settle
from operations.tariffs import agile_like_prices

__all__ = [
    "ALL_CLEAR",
    "DAY_AHEAD_PRICES",
    "DEMAND_RESPONSE",
    "ALL_REGIONS",
    "ALL_REGIONS_LABEL",
    "DEFAULT_REGIONS",
    "DEFAULT_MIN_INTERVAL_S",
    "DEFAULT_MAX_INTERVAL_S",
    "DEFAULT_DURATION_S",
    "DEFAULT_RETRY_DELAY_S",
    "DEFAULT_MAX_RETRY_DELAY_S",
    "DEFAULT_RETRY_ATTEMPTS",
    "ALL_CLEAR_MESSAGE",
    "CATALOGUE",
    "Severity",
    "StopReason",
    "AlertSpec",
    "ActiveAlert",
    "Scenario",
    "RandomAlerts",
    "Emitter",
    "check_ready",
]

log = logging.getLogger("emitter")

#: The kind that clears this emitter's alerts instead of warning about something.
ALL_CLEAR = "all_clear"
#: The kind that publishes tomorrow's day-ahead prices, then says so.
DAY_AHEAD_PRICES = "day_ahead_prices"
#: The kind that creates a demand-response event on chain, then tells households.
DEMAND_RESPONSE = "demand_response"
#: A demand-response event's notice (at least), length and credit rate (millipence per kWh: 300p, as DFS paid).
DR_NOTICE_S = 900
DR_DURATION_S = 1_800
DR_CREDIT_RATE = 300_000
#: Seconds after an event's end before the emitter settles it: the reading that closes a meter's window
#: comes up to a reading interval (60 s) later and must be on chain first.
DR_SETTLE_AFTER_S = 180
#: Seconds before settling is tried again when it could not be done (not completed on chain yet, chain failure).
DR_SETTLE_RETRY_S = 60
#: Tries before an event is left for ``scripts/demand_response.py settle`` by hand.
DR_SETTLE_ATTEMPTS = 10
#: In random mode, a demand-response event at least this often (seconds since the last one began).
DR_EVERY_S = 3_600
DR_PROGRAMME = "flex-demo"
#: The region text that means "every region" (zero bytes32 on chain).
ALL_REGIONS = ""
#: Regions random alerts are drawn from; ``ALL_REGIONS`` makes some alerts grid-wide.
DEFAULT_REGIONS: tuple[str, ...] = ("north", "south", "east", "west", ALL_REGIONS)
#: Default bounds, in seconds, of the uniform wait between random alerts.
DEFAULT_MIN_INTERVAL_S = 60.0
DEFAULT_MAX_INTERVAL_S = 180.0
#: How long a scenario step's alert lasts when the step gives no ``duration_s``.
DEFAULT_DURATION_S = 300.0
#: Shortest alert: the chain needs an expiry strictly after the block being mined.
MIN_DURATION_S = 1.0
#: First back-off after a chain failure; it doubles with each failure up to the maximum.
DEFAULT_RETRY_DELAY_S = 2.0
DEFAULT_MAX_RETRY_DELAY_S = 60.0
#: Attempts at raising one alert, or at clearing one expired alert, before giving up on it.
DEFAULT_RETRY_ATTEMPTS = 4
ALL_CLEAR_MESSAGE = "All clear: the grid is back to normal. Thank you for your help."
#: Longest text the contract's bytes32 ``kind`` and ``region`` fields hold, in UTF-8 bytes.
TEXT32_MAX_BYTES = 32
#: How regions are written in log lines when an alert concerns every region.
ALL_REGIONS_LABEL = "all"
#: The longest error text kept in a log line.
LOG_ERROR_CHARS = 200
#: Keys a scenario step may have.
STEP_KEYS = frozenset({"after_s", "kind", "severity", "region", "message", "duration_s"})
#: Keys a scenario file's top-level object may have.
SCENARIO_KEYS = frozenset({"steps", "description"})

#: What a failing chain call may raise through Billing: refusals, unreachable nodes, timeouts.
CHAIN_FAILURES: tuple[type[BaseException], ...] = (ChainError, Web3Exception, OSError)
#: Why settling an event may have to wait: it is not completed on chain yet, or the chain failed.
SETTLE_FAILURES: tuple[type[BaseException], ...] = (InvalidRequest, *CHAIN_FAILURES)


class Severity(enum.IntEnum):
    """How urgent an alert is, as the contract and the meters' screens number it."""

    INFO = 0
    WARNING = 1
    CRITICAL = 2


class StopReason(enum.Enum):
    """Why ``Emitter.run`` returned."""

    STOPPED = "stopped"
    DEADLINE = "deadline"
    FINISHED = "finished"


def _check_text32(name: str, value: str) -> None:
    if len(value.encode()) > TEXT32_MAX_BYTES:
        raise ValueError(f"{name} {value!r} is longer than {TEXT32_MAX_BYTES} bytes")


@dataclass(frozen=True)
class AlertSpec:
    """One alert to raise: what kind, how severe, where, what households read, for how long.

    ``after_s`` is only used by scenarios: seconds after the previous step. Invalid values raise
    ValueError in plain words, so nothing malformed ever reaches the chain.
    """

    kind: str
    severity: int
    region: str
    message: str
    duration_s: float
    after_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.kind:
            raise ValueError("kind must not be empty")
        _check_text32("kind", self.kind)
        _check_text32("region", self.region)
        if isinstance(self.severity, bool) or self.severity not in tuple(Severity):
            raise ValueError(f"severity must be 0 (info), 1 (warning) or 2 (critical), not {self.severity!r}")
        if not self.message and self.kind not in (ALL_CLEAR, DAY_AHEAD_PRICES, DEMAND_RESPONSE):
            raise ValueError("message must say something to households")
        if not math.isfinite(self.duration_s) or self.duration_s < MIN_DURATION_S:
            raise ValueError(f"duration_s must be at least {MIN_DURATION_S:g} second, not {self.duration_s!r}")
        if not math.isfinite(self.after_s) or self.after_s < 0:
            raise ValueError(f"after_s must be zero or more seconds, not {self.after_s!r}")


@dataclass(frozen=True)
class ActiveAlert:
    """An alert this emitter raised and has not yet cleared."""

    id: int
    kind: str
    severity: int
    region: str
    message: str
    raised_at: float
    expires_at: int


#: Realistic alerts for the random mode; the region is drawn separately.
CATALOGUE: tuple[AlertSpec, ...] = (
    AlertSpec("frequency_dip", Severity.CRITICAL, ALL_REGIONS,
              "Grid frequency dip: please switch off heavy appliances (oven, heaters, washing machine) "
              "for the next 10 minutes.", 600),
    AlertSpec("reduce_usage", Severity.WARNING, ALL_REGIONS,
              "Demand peak: please reduce your usage between 17:00 and 19:00.", 900),
    AlertSpec("maintenance", Severity.INFO, ALL_REGIONS,
              "Planned maintenance on the local network tonight; supply is not expected to be interrupted.",
              1800),
    AlertSpec("cheap_power", Severity.INFO, ALL_REGIONS,
              "High wind generation: power is cheap now, a good time to run the washing machine.", 900),
    AlertSpec(ALL_CLEAR, Severity.INFO, ALL_REGIONS, ALL_CLEAR_MESSAGE, 300),
)


def _number(raw: dict[str, Any], key: str, default: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} must be a number of seconds, not {value!r}")
    return float(value)


def _text(raw: dict[str, Any], key: str, default: str | None = None) -> str:
    value = raw.get(key, default)
    if value is None:
        raise ValueError(f"{key} is missing")
    if not isinstance(value, str):
        raise ValueError(f"{key} must be text, not {value!r}")
    return value


def _step(raw: Any) -> AlertSpec:
    """One scenario step from its JSON object (ValueError in plain words when malformed)."""
    if not isinstance(raw, dict):
        raise ValueError("a step must be a JSON object")
    unknown = sorted(set(raw) - STEP_KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}; a step has {', '.join(sorted(STEP_KEYS))}")
    severity = raw.get("severity", int(Severity.INFO))
    if isinstance(severity, bool) or not isinstance(severity, int):
        raise ValueError(f"severity must be 0 (info), 1 (warning) or 2 (critical), not {severity!r}")
    kind = _text(raw, "kind")
    return AlertSpec(
        kind=kind,
        severity=severity,
        region=_text(raw, "region", ALL_REGIONS),
        message=_text(raw, "message", "" if kind in (ALL_CLEAR, DAY_AHEAD_PRICES, DEMAND_RESPONSE) else None),
        duration_s=_number(raw, "duration_s", DEFAULT_DURATION_S),
        after_s=_number(raw, "after_s", 0.0),
    )


@dataclass(frozen=True)
class Scenario:
    """An ordered list of alert steps; each step's ``after_s`` counts from the previous step."""

    steps: tuple[AlertSpec, ...]

    @classmethod
    def from_json(cls, data: Any, source: str = "the scenario") -> Scenario:
        """Build a scenario from parsed JSON (a list of steps or ``{"steps": [...]}``).

        Raises:
            ConfigError: naming ``source`` and the step (counted from 1) and what is wrong.
        """
        if isinstance(data, dict) and "steps" in data and set(data) <= SCENARIO_KEYS:
            data = data["steps"]
        if not isinstance(data, list):
            raise ConfigError(
                f"{source} must be a JSON list of steps, or an object with \"steps\" (and an optional "
                "\"description\"); fix the scenario file"
            )
        steps = []
        for number, raw in enumerate(data, start=1):
            try:
                steps.append(_step(raw))
            except ValueError as err:
                raise ConfigError(f"{source}: step {number}: {err}; fix the scenario file") from err
        return cls(tuple(steps))

    @classmethod
    def load(cls, path: Path) -> Scenario:
        """Read and check a scenario file.

        Raises:
            ConfigError: when the file cannot be read, is not JSON or has a malformed step.
        """
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise ConfigError(f"cannot read the scenario file {path}: {err.strerror or err}") from err
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"the scenario file {path} is not valid JSON (line {err.lineno}: {err.msg})") from err
        return cls.from_json(data, source=str(path))

    @property
    def length_s(self) -> float:
        """Seconds from the start to the last step."""
        return sum(step.after_s for step in self.steps)


class RandomAlerts:
    """Draws random alerts: waits uniform in [min_interval, max_interval] seconds, kinds from a
    catalogue, regions from a list. Does no I/O; the same seed gives the same draws.

    An ``all_clear`` is only drawn while something is active (else another kind is drawn instead),
    and always concerns every region because it clears everything.
    """

    def __init__(
        self,
        *,
        regions: Iterable[str] = DEFAULT_REGIONS,
        min_interval: float = DEFAULT_MIN_INTERVAL_S,
        max_interval: float = DEFAULT_MAX_INTERVAL_S,
        seed: int | None = None,
        catalogue: Iterable[AlertSpec] = CATALOGUE,
    ) -> None:
        self.regions = tuple(regions)
        self.catalogue = tuple(catalogue)
        if not self.regions:
            raise ValueError("give at least one region (\"\" means every region)")
        for region in self.regions:
            _check_text32("region", region)
        if not any(spec.kind != ALL_CLEAR for spec in self.catalogue):
            raise ValueError("the catalogue needs at least one alert other than all_clear")
        if not (0 < min_interval <= max_interval and math.isfinite(max_interval)):
            raise ValueError(
                f"the interval must satisfy 0 < min ({min_interval:g}) <= max ({max_interval:g}) seconds"
            )
        self.min_interval = float(min_interval)
        self.max_interval = float(max_interval)
        self.rng = random.Random(seed)

    def next_interval(self) -> float:
        """Seconds to wait before the next random alert."""
        return self.rng.uniform(self.min_interval, self.max_interval)

    def next_alert(self, anything_active: bool = True) -> AlertSpec:
        """Draw the next alert; ``anything_active`` says whether an all-clear would clear anything."""
        choices = self.catalogue if anything_active else tuple(s for s in self.catalogue if s.kind != ALL_CLEAR)
        spec = self.rng.choice(choices)
        region = self.rng.choice(self.regions)
        return replace(spec, region=ALL_REGIONS if spec.kind == ALL_CLEAR else region, after_s=0.0)


def check_ready(billing: Billing) -> None:
    """Check the contract is on chain and the grid operator's key may raise alerts.

    Raises:
        DeploymentMissing: no code at the recorded address (the chain was reset): deploy again.
        ConfigError: ``GRID_OPERATOR_KEY`` does not hold ``GRID_OPERATOR_ROLE``.
        ChainUnavailable: the node stopped answering.
    """
    address = billing.contract.address
    try:
        code = billing.client.w3.eth.get_code(address)
        if len(code) == 0:
            raise DeploymentMissing(
                f"no contract at the recorded address {address} on the chain at {billing.settings.chain_rpc_url} "
                "(the chain was probably restarted); deploy it with: .venv/bin/python scripts/deploy.py"
            )
        role = billing.contract.functions.GRID_OPERATOR_ROLE().call()
        account = Account.from_key(billing.settings.grid_operator_key).address
        allowed = billing.contract.functions.hasRole(role, account).call()
    except (OSError, Web3Exception) as err:
        raise ChainUnavailable(
            f"the chain at {billing.settings.chain_rpc_url} stopped answering ({type(err).__name__}); "
            "start it with ./run-docker.sh"
        ) from err
    if not allowed:
        raise ConfigError(
            f"GRID_OPERATOR_KEY (account {account}) may not raise grid alerts on {address}; set it to the grid "
            "operator's key, or redeploy with: .venv/bin/python scripts/deploy.py --force"
        )


def _region_label(region: str) -> str:
    return region or ALL_REGIONS_LABEL


def _short(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"[:LOG_ERROR_CHARS]


class Emitter:
    """Raises grid alerts through the chain and clears each one at its expiry.

    Tracks every alert it raised that is still active (``active``, by id). Expiry is
    ``clock() + duration`` in unix seconds (the chain's block time follows the wall clock), and the
    emitter itself calls ``clearGridAlert`` then, so the chain emits ``GridAlertCleared``.

    A chain failure never ends the loop: a raise is retried with exponential back-off
    (``retry_delay`` doubling up to ``max_retry_delay``) up to ``retry_attempts`` times, then
    dropped; a failed clear of an expired alert is retried the same way, then abandoned (the
    alert lapses on chain by itself). ``shutdown`` tries once to clear everything still active.

    ``clock`` and ``sleep`` are injectable; the default sleep returns early when ``stop`` is
    called, so a signal handler that calls ``stop`` ends a long wait at once.
    """

    def __init__(
        self,
        billing: Billing,
        *,
        random_alerts: RandomAlerts | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], object] | None = None,
        retry_delay: float = DEFAULT_RETRY_DELAY_S,
        max_retry_delay: float = DEFAULT_MAX_RETRY_DELAY_S,
        retry_attempts: int = DEFAULT_RETRY_ATTEMPTS,
        settle_after: float = DR_SETTLE_AFTER_S,
        dr_every: float | None = DR_EVERY_S,
    ) -> None:
        if retry_delay < 0 or max_retry_delay < retry_delay or retry_attempts < 1:
            raise ValueError("need 0 <= retry_delay <= max_retry_delay and retry_attempts >= 1")
        self.billing = billing
        self.random_alerts = random_alerts or RandomAlerts()
        self.clock = clock
        self._stop = threading.Event()
        self._sleep: Callable[[float], object] = sleep or self._stop.wait
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.retry_attempts = retry_attempts
        #: Alerts this emitter raised that are still active, by id.
        self.active: dict[int, ActiveAlert] = {}
        #: Failed clears of expired alerts: id -> (failures so far, clock time of the next try).
        self._clear_retries: dict[int, tuple[int, float]] = {}
        #: Seconds after a demand-response event's end before it is settled.
        self.settle_after = settle_after
        #: Demand-response events to settle: id -> (failed tries so far, clock time of the next try).
        self.to_settle: dict[int, tuple[int, float]] = {}
        #: In random mode, seconds between demand-response events at most (None: only as scenarios say).
        self.dr_every = dr_every
        self._last_dr: float | None = None
        self._until: float | None = None

    # ---------------------------------------------------------------- control

    @property
    def stopping(self) -> bool:
        """Whether ``stop`` was called."""
        return self._stop.is_set()

    def stop(self) -> None:
        """Ask the running loop to finish (safe to call from a signal handler)."""
        self._stop.set()

    def _done(self) -> bool:
        return self.stopping or (self._until is not None and self.clock() >= self._until)

    def _backoff(self, failures: int) -> float:
        return backoff_delay(failures, self.retry_delay, self.max_retry_delay)

    # ---------------------------------------------------------------- alerts

    def raise_alert(self, spec: AlertSpec) -> ActiveAlert | None:
        """Raise one alert, retrying chain failures; None if it was dropped or the emitter stopped.

        For ``all_clear`` first clears every alert this emitter raised, then raises an info alert
        with the spec's message (or ``ALL_CLEAR_MESSAGE``).
        """
        if spec.kind == ALL_CLEAR:
            self.clear_all(reason="all_clear")
            spec = replace(spec, severity=Severity.INFO, message=spec.message or ALL_CLEAR_MESSAGE)
        if spec.kind == DAY_AHEAD_PRICES:
            told = self.publish_prices()
            if told is None:
                return None
            spec = replace(spec, severity=Severity.INFO, message=spec.message or told)
        if spec.kind == DEMAND_RESPONSE:
            told = self.raise_demand_response(spec)
            if told is None:
                return None
            spec = replace(spec, severity=Severity.WARNING, message=spec.message or told)
        reason = "chain_failures"
        for attempt in range(1, self.retry_attempts + 1):
            raised_at = self.clock()
            expires_at = math.ceil(raised_at + spec.duration_s)
            try:
                receipt = self.billing.raise_grid_alert(
                    int(spec.severity), spec.kind, spec.region, spec.message, expires_at
                )
                alert_id = int(self.billing.events("GridAlert", receipt)[0].args.id)
            except CHAIN_FAILURES as err:
                last = attempt == self.retry_attempts
                delay = self._backoff(attempt)
                log_event(log, "grid_alert_raise_failed", logging.WARNING, kind=spec.kind,
                          region=_region_label(spec.region), attempt=attempt, of=self.retry_attempts,
                          retry_in=None if last else f"{delay:g}s", error=_short(err))
                if not last:
                    self.wait(delay)
                if last or self._done():
                    reason = "chain_failures" if last else "stopping"
                    break
                continue
            alert = ActiveAlert(alert_id, spec.kind, int(spec.severity), spec.region, spec.message,
                                raised_at, expires_at)
            self.active[alert_id] = alert
            log_event(log, "grid_alert_raised", id=alert_id, kind=spec.kind, region=_region_label(spec.region),
                      severity=int(spec.severity), expires_at=expires_at, message=spec.message)
            return alert
        log_event(log, "grid_alert_dropped", logging.WARNING, kind=spec.kind, region=_region_label(spec.region),
                  reason=reason)
        return None

    def raise_demand_response(self, spec: AlertSpec) -> str | None:
        """Create a demand-response event for the step's region; a sentence for households, None on failure."""
        tz = self.billing.settings.tz
        now = max(int(self.clock()), self.billing.now())
        start = -(-(now + DR_NOTICE_S) // 1_800) * 1_800
        regions = [spec.region] if spec.region else sorted(
            {self.billing.meter(m).region for m in self.billing.meters()} or set(DEFAULT_REGIONS) - {ALL_REGIONS})
        level = min(3, int(spec.severity) + 1)
        terms = Terms(start, DR_DURATION_S, DR_NOTICE_S, Signal.LEVEL, level, DR_CREDIT_RATE)
        try:
            event_id = DemandResponse(self.billing.client, self.billing.deployment).create_event(
                DR_PROGRAMME, terms, regions=regions)
        except CHAIN_FAILURES as err:
            log_event(log, "demand_response_failed", logging.WARNING, regions=",".join(regions), error=_short(err))
            return None
        begins = dt.datetime.fromtimestamp(start, tz).strftime("%H:%M")
        ends = dt.datetime.fromtimestamp(terms.end, tz).strftime("%H:%M")
        log_event(log, "demand_response_event", id=event_id, regions=",".join(regions), start=start, level=level)
        self.to_settle[event_id] = (0, terms.end + self.settle_after)
        self._last_dr = self.clock()
        return (f"Demand response event {event_id}: use less from {begins} to {ends} and earn "
                f"{DR_CREDIT_RATE / 100_000:.2f} pounds for each kWh below your usual use; opt out before {begins} "
                "if you cannot.")

    def publish_prices(self) -> str | None:
        """Publish the next local day's day-ahead prices; a sentence for households, None on failure."""
        tz = self.billing.settings.tz
        tomorrow = dt.datetime.fromtimestamp(self.clock(), tz).date() + dt.timedelta(days=1)
        start = int(dt.datetime.combine(tomorrow, dt.time(), tzinfo=tz).timestamp())
        imports, exports = agile_like_prices(start, tz)
        try:
            self.billing.publish_day_ahead(start, imports, exports)
        except CHAIN_FAILURES as err:
            log_event(log, "day_ahead_prices_failed", logging.WARNING, day=tomorrow.isoformat(), error=_short(err))
            return None
        cheap, dear = imports.index(min(imports)), imports.index(max(imports))

        def at(i: int) -> str:
            return dt.datetime.fromtimestamp(start + i * 1_800, tz).strftime("%H:%M")

        log_event(log, "day_ahead_prices_published", day=tomorrow.isoformat(), periods=len(imports),
                  cheapest=at(cheap), dearest=at(dear))
        return (f"Tomorrow's half-hourly prices are out: cheapest at {at(cheap)} ({min(imports) / 1000:.2f}p/kWh), "
                f"dearest at {at(dear)} ({max(imports) / 1000:.2f}p/kWh).")

    def clear(self, alert_id: int, reason: str = "requested") -> bool:
        """Clear one alert this emitter raised; True when it is no longer active on chain.

        An alert the chain already considers cleared (``AlertNotActive``) counts as cleared.
        """
        alert = self.active.get(alert_id)
        try:
            self.billing.clear_grid_alert(alert_id)
        except ChainError as err:
            if "AlertNotActive" not in str(err):
                log_event(log, "grid_alert_clear_failed", logging.WARNING, id=alert_id, reason=reason,
                          error=_short(err))
                return False
        except CHAIN_FAILURES as err:
            log_event(log, "grid_alert_clear_failed", logging.WARNING, id=alert_id, reason=reason, error=_short(err))
            return False
        self.active.pop(alert_id, None)
        self._clear_retries.pop(alert_id, None)
        log_event(log, "grid_alert_cleared", id=alert_id, kind=alert.kind if alert else None,
                  region=_region_label(alert.region) if alert else None, reason=reason)
        return True

    def clear_all(self, reason: str = "requested") -> int:
        """Clear every alert this emitter raised that is still active; returns how many are left."""
        for alert_id in list(self.active):
            self.clear(alert_id, reason=reason)
        return len(self.active)

    def _due(self, alert: ActiveAlert) -> float:
        retry = self._clear_retries.get(alert.id)
        return retry[1] if retry else float(alert.expires_at)

    def clear_expired(self) -> None:
        """Clear the alerts whose time is up (and retry clears that failed, when their back-off ends)."""
        now = self.clock()
        for alert in [a for a in self.active.values() if self._due(a) <= now]:
            if self.clear(alert.id, reason="expired"):
                continue
            failures = self._clear_retries.get(alert.id, (0, now))[0] + 1
            if failures >= self.retry_attempts:
                self.active.pop(alert.id, None)
                self._clear_retries.pop(alert.id, None)
                log_event(log, "grid_alert_abandoned", logging.WARNING, id=alert.id, expires_at=alert.expires_at,
                          reason="the clear kept failing; the alert has lapsed on chain by itself")
            else:
                self._clear_retries[alert.id] = (failures, now + self._backoff(failures))

    # ---------------------------------------------------------------- settlement

    def adopt_unsettled(self) -> int:
        """Take on the chain's events that are neither cancelled nor credited yet (after a restart); how many."""
        if self.billing.deployment.demand_response is None:
            return 0
        dr = DemandResponse(self.billing.client, self.billing.deployment)
        credited = {c.event_id for c in dr.credits()}
        now = self.clock()
        adopted = 0
        for event_id in dr.event_ids():
            event = dr.event(event_id)
            if event_id in credited or event_id in self.to_settle or event.status == Status.CANCELLED:
                continue
            self.to_settle[event_id] = (0, max(now, event.terms.end + self.settle_after))
            adopted += 1
        return adopted

    def settle_due(self) -> None:
        """Settle the demand-response events whose time has come (each meter measured and credited once)."""
        now = self.clock()
        for event_id, (failures, due) in sorted(self.to_settle.items()):
            if due > now or self.stopping:
                continue
            try:
                done = settle(DemandResponse(self.billing.client, self.billing.deployment), event_id)
            except SETTLE_FAILURES as err:
                failures += 1
                if failures >= DR_SETTLE_ATTEMPTS:
                    del self.to_settle[event_id]
                    log_event(log, "demand_response_unsettled", logging.WARNING, id=event_id, error=_short(err),
                              todo=f"settle it with: scripts/demand_response.py settle {event_id}")
                else:
                    self.to_settle[event_id] = (failures, now + DR_SETTLE_RETRY_S)
                    log_event(log, "demand_response_settle_later", id=event_id, attempt=failures,
                              retry_in=f"{DR_SETTLE_RETRY_S}s", reason=_short(err))
                continue
            del self.to_settle[event_id]
            log_event(log, "demand_response_settled", id=event_id, targeted=len(done.responses),
                      opted_out=sum(r.opted_out for r in done.responses), credited=done.credited,
                      micropence=done.total)

    # ---------------------------------------------------------------- loops

    def wait(self, seconds: float) -> None:
        """Wait ``seconds``, clearing alerts as they expire; returns early on stop or the deadline."""
        deadline = self.clock() + max(seconds, 0.0)
        if self._until is not None:
            deadline = min(deadline, self._until)
        while not self.stopping:
            self.clear_expired()
            self.settle_due()
            now = self.clock()
            if now >= deadline:
                return
            wake = min([deadline, *(self._due(a) for a in self.active.values()),
                        *(due for _, due in self.to_settle.values())])
            self._sleep(max(wake - now, 0.0))

    def run_scenario(self, scenario: Scenario) -> None:
        """Raise the scenario's alerts at their times (until stopped or past the deadline)."""
        for spec in scenario.steps:
            self.wait(spec.after_s)
            if self._done():
                return
            self.raise_alert(spec)

    def run_random(self) -> None:
        """Raise random alerts at random intervals until stopped or past the deadline (a demand-response event
        each ``dr_every`` seconds among them, the first that long after the start)."""
        if self._last_dr is None:
            self._last_dr = self.clock()
        while not self._done():
            self.wait(self.random_alerts.next_interval())
            if self._done():
                return
            self.raise_alert(self._dr_step() or self.random_alerts.next_alert(anything_active=bool(self.active)))

    def _dr_step(self) -> AlertSpec | None:
        """A demand-response step for every region when the last event is ``dr_every`` ago (or there was none)."""
        if self.dr_every is None or self.billing.deployment.demand_response is None:
            return None  # a deployment from before DemandResponse has no events to raise
        if self._last_dr is not None and self.clock() - self._last_dr < self.dr_every:
            return None
        return AlertSpec(DEMAND_RESPONSE, int(Severity.WARNING), "", "", DR_DURATION_S)

    def wait_for_expiries(self) -> None:
        """Wait until every alert this emitter raised has been cleared at its expiry."""
        while self.active and not self._done():
            now = self.clock()
            self.wait(max(min(self._due(a) for a in self.active.values()) - now, 0.0))

    def shutdown(self) -> int:
        """Clear every alert still active (one try each); returns how many are left to lapse by themselves."""
        left = self.clear_all(reason="shutdown")
        for event_id in self.to_settle:
            log_event(log, "demand_response_left_unsettled", id=event_id,
                      todo=f"the next emitter settles it, or: scripts/demand_response.py settle {event_id}")
        for alert in self.active.values():
            log_event(log, "grid_alert_left_active", logging.WARNING, id=alert.id, expires_at=alert.expires_at)
        return left

    def run(
        self, scenario: Scenario | None = None, *, then_random: bool = True, until: float | None = None
    ) -> StopReason:
        """Play ``scenario`` (if any), then random alerts, or if not ``then_random`` wait for the
        scenario's alerts to expire; ``until`` is a clock time to stop at. Always ends with ``shutdown``.
        """
        self._until = until
        try:
            if scenario is not None:
                self.run_scenario(scenario)
            if then_random:
                self.run_random()
            else:
                self.wait_for_expiries()
        finally:
            self.shutdown()
        if self.stopping:
            return StopReason.STOPPED
        if until is not None and self.clock() >= until:
            return StopReason.DEADLINE
        return StopReason.FINISHED
