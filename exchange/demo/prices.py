"""The demo's price process: a mean-reverting random walk around a fixed reference, in integers.

Pure (no Django, no database) so that its statistics are tested over many thousands of steps in
milliseconds. The state is a deviation from the reference in parts per million, not a price in
ticks: a walk kept in whole ticks on a cheap market (2.00 at a 0.01 tick is 200 ticks) had to
round every step and every pull to a tick, and floor division rounded the pull towards minus
infinity — above the reference it pulled down by a tick, below it did not pull up at all — so
the cheap markets slid 10–15 % in minutes. Here the pull is rounded half-to-even (symmetric
around zero) at a millionth of the price, and ticks appear only when a price is quoted.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

PPM = 1_000_000
# Each step moves the price by a uniform amount of at most 0.25 % and pulls it back by 1 % of its
# distance from the reference: a stationary spread of about 1 % (0.25 % / sqrt(3) / sqrt(1 -
# 0.99²)), half-life about 70 steps.
STEP_PPM = 2_500
PULL_DIVISOR = 100


def divide_rounded(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` (``denominator`` > 0) rounded half-to-even: symmetric around
    zero, so no bias either way (``round(Fraction(...))`` in integers only, a few times faster)."""
    quotient, remainder = divmod(numerator, denominator)  # floor: 0 <= remainder < denominator
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2 == 1):
        quotient += 1
    return quotient


def band_limits(reference_ticks: int, band: Decimal) -> tuple[int, int]:
    """The lowest and highest price in ticks a bot may trade at: ``band`` (a fraction) either
    side of the reference, rounded inwards."""
    low = int((reference_ticks * (1 - band)).to_integral_value(rounding=ROUND_CEILING))
    high = int((reference_ticks * (1 + band)).to_integral_value(rounding=ROUND_FLOOR))
    return max(1, low), high


@dataclass
class PriceProcess:
    """The "fair" price of one market. ``band`` caps the deviation at half the market's price
    band, so that quotes a few ticks around the fair price stay inside the band."""

    reference_ticks: int
    band: Decimal
    rng: random.Random
    deviation_ppm: int = 0

    def __post_init__(self) -> None:
        self.deviation_ppm = self._clamped(self.deviation_ppm)

    def _clamped(self, deviation: int) -> int:
        limit = int(self.band * PPM) // 2
        return max(-limit, min(limit, deviation))

    def start_at(self, ticks: int) -> None:
        """Continue from a known price (the last trade or the last candle), within the cap."""
        self.deviation_ppm = self._clamped(
            divide_rounded((ticks - self.reference_ticks) * PPM, self.reference_ticks)
        )

    def step(self) -> None:
        pull = divide_rounded(self.deviation_ppm, PULL_DIVISOR)
        noise = self.rng.randint(-STEP_PPM, STEP_PPM)
        self.deviation_ppm = self._clamped(self.deviation_ppm - pull + noise)

    @property
    def fair_ticks(self) -> int:
        return max(1, divide_rounded(self.reference_ticks * (PPM + self.deviation_ppm), PPM))
