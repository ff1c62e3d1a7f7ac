"""The demo's price process: no drift, mean reversion, inside the band (no database)."""

from __future__ import annotations

import random
import statistics
from decimal import Decimal

import pytest

from exchange.demo.prices import PriceProcess, band_limits, divide_rounded
from exchange.demo.seed import REFERENCE_PRICES

TICK = {"USD": Decimal("0.001"), "CNY": Decimal("0.01")}
REFERENCES = sorted(
    int(price / TICK[symbol.rsplit("-", 1)[1]]) for symbol, price in REFERENCE_PRICES.items()
)
BAND = Decimal("0.10")


def test_rounding_is_symmetric_around_zero() -> None:
    assert [divide_rounded(n, 100) for n in (-251, -250, -150, -50, -49, 49, 50, 150, 250, 251)] == [
        -3, -2, -2, 0, 0, 0, 0, 2, 2, 3,
    ]  # fmt: skip
    assert all(divide_rounded(-n, 7) == -divide_rounded(n, 7) for n in range(1000))


@pytest.mark.parametrize("reference", REFERENCES)
def test_ten_thousand_steps_stay_around_the_reference(reference: int) -> None:
    # The walk this replaces (whole ticks, floor-rounded pull) lost 10-15 % in 300 steps on
    # the 200-tick market; the median here must stay within 1 % of the reference.
    process = PriceProcess(reference_ticks=reference, band=BAND, rng=random.Random(reference))
    prices = []
    for _ in range(10_000):
        process.step()
        prices.append(process.fair_ticks)
    median = statistics.median(prices)
    assert abs(median - reference) <= reference / 100, (median, reference)
    low, high = band_limits(reference, BAND)
    assert low <= min(prices)
    assert max(prices) <= high
    # it moves: a believable market is not flat
    assert max(prices) - min(prices) >= reference // 50


def test_no_drift_across_many_runs() -> None:
    # Where 100 independent walks end after 2,000 steps: centred on the reference (a bias of
    # one rounding unit per step would move the mean by far more than the tolerance).
    reference = 200
    ends = []
    for seed in range(100):
        process = PriceProcess(reference_ticks=reference, band=BAND, rng=random.Random(seed))
        for _ in range(2_000):
            process.step()
        ends.append(process.deviation_ppm)
    assert abs(statistics.mean(ends)) < 3_000  # 0.3 % of the price


def test_pull_brings_a_displaced_price_back() -> None:
    process = PriceProcess(reference_ticks=800, band=BAND, rng=random.Random(1))
    process.start_at(830)
    assert process.fair_ticks == 830
    for _ in range(500):
        process.step()
    assert abs(process.fair_ticks - 800) < 30


def test_start_is_capped_at_half_the_band() -> None:
    process = PriceProcess(reference_ticks=200, band=BAND, rng=random.Random(1))
    process.start_at(100)  # a stray trade far below: the walk resumes at the cap, not there
    assert process.fair_ticks == 190


def test_band_limits_round_inwards() -> None:
    assert band_limits(200, BAND) == (180, 220)
    assert band_limits(205, BAND) == (185, 225)  # 184.5 → 185, 225.5 → 225
