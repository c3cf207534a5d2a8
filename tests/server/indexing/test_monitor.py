"""The consumption-threshold rules: hourly limit and abrupt jumps."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from server.indexing.monitor import Rules, Trend, evaluate

METER = "0x" + "ab" * 20
UTC = ZoneInfo("UTC")
RULES = Rules(jump_factor=3.0, jump_min_w=1_000, window=12, min_samples=4)


def feed(trend: Trend, powers_w: list[int], seconds: int = 600) -> list[list[str]]:
    """Feed intervals of the given mean powers; returns the alert kinds raised by each."""
    out = []
    for i, watts in enumerate(powers_w):
        wh = watts * seconds // 3600
        alerts = evaluate(trend, METER, i * seconds, (i + 1) * seconds, wh, [], 0, RULES, UTC)
        out.append([c.alert.kind for c in alerts])
    return out


def test_an_hour_over_the_limit_raises_an_hourly_limit_alert():
    alerts = evaluate(Trend(), METER, 0, 600, 500, [(0, 3_200)], 3_000, RULES, UTC)
    assert [(c.key, c.alert.kind, c.alert.energy_wh, c.alert.limit_wh) for c in alerts] == [
        (0, "hourly_limit", 3_200, 3_000)
    ]
    assert "3.20 kWh" in alerts[0].alert.message and "3.00 kWh" in alerts[0].alert.message


def test_an_hour_at_or_under_the_limit_raises_nothing():
    assert evaluate(Trend(), METER, 0, 600, 500, [(0, 3_000)], 3_000, RULES, UTC) == []


def test_a_zero_limit_means_no_hourly_alerts():
    assert evaluate(Trend(), METER, 0, 600, 500, [(0, 99_000)], 0, RULES, UTC) == []


def test_power_three_times_the_median_raises_one_jump_alert_when_it_begins():
    kinds = feed(Trend(), [400, 420, 380, 410, 400, 4_000, 4_100, 4_000, 400, 4_000])
    assert kinds == [[], [], [], [], [], ["sudden_jump"], [], [], [], ["sudden_jump"]]


def test_no_jump_alert_before_enough_history():
    assert feed(Trend(), [100, 100, 100, 5_000]) == [[], [], [], []]


def test_a_small_rise_from_a_low_base_is_not_a_jump():
    # 150 W to 700 W is more than three times, but less than 1 kW above the usual.
    assert feed(Trend(), [150, 150, 150, 150, 150, 700]) == [[], [], [], [], [], []]


def test_the_jump_alert_carries_power_and_a_plain_message():
    trend = Trend()
    feed(trend, [500] * 6)
    alerts = evaluate(trend, METER, 0, 900, 1_500, [], 0, RULES, UTC)
    assert [(c.alert.kind, c.alert.power_w, c.key) for c in alerts] == [("sudden_jump", 6_000, 900)]
    assert "6.0 kW" in alerts[0].alert.message and "0.5 kW" in alerts[0].alert.message


def test_whole_watt_hours_in_short_intervals_are_not_jumps():
    # A 150 W house read every 3 s: most intervals count 0 Wh, one in eight counts 1 Wh (1.2 kW if taken alone).
    trend = Trend()
    kinds = []
    for i in range(40):
        wh = 1 if i % 8 == 7 else 0
        kinds += [c.alert.kind for c in evaluate(trend, METER, i * 3, i * 3 + 3, wh, [], 0, RULES, UTC)]
    assert kinds == []


def test_a_kettle_read_every_15_seconds_is_a_jump_within_a_minute():
    trend = Trend()
    t, kinds = 0, []
    for wh in [2] * 20 + [12] * 6:  # 480 W, then 2.9 kW
        kinds.append([c.alert.kind for c in evaluate(trend, METER, t, t + 15, wh, [], 0, RULES, UTC)])
        t += 15
    assert ["sudden_jump"] in kinds[20:24] and sum(k == ["sudden_jump"] for k in kinds) == 1
