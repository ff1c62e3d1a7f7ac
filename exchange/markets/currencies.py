"""Quote currencies and their ledger units.

Every amount of a currency is kept as an integer count of its ledger unit, ``10**-decimals``
of the currency. The unit is far below the smallest coin so that every notional
(tick size × lot size × integers) of every market is an exact number of units; markets whose
tick × lot would not be are refused (see ``exchange.markets.services``).
"""

from decimal import Decimal

# decimals of the ledger unit: 1 CNY = 10**8 units, 1 USD = 10**8 units.
CURRENCY_DECIMALS: dict[str, int] = {"CNY": 8, "USD": 8}

TOKENS_PER_MTOK = 1_000_000


def ledger_unit(currency: str) -> Decimal:
    return Decimal(1).scaleb(-CURRENCY_DECIMALS[currency])


CURRENCY_CHOICES: list[tuple[str, str]] = [(code, code) for code in CURRENCY_DECIMALS]


def currency_choices() -> list[tuple[str, str]]:
    return list(CURRENCY_CHOICES)
