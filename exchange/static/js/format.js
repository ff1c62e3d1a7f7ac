// The one formatter per kind of number, locale-aware through Intl (the page's language), the same
// digits as the server's template filters (exchange/web/templatetags/web.py):
//   price    — the market's tick decimals                   price("12", 2)        → "12.00"
//   quantity — the market's lot decimals (MTok)             quantity("13.2", 3)   → "13.200"
//   money    — the currency's decimals, half to even        money("1234.5", "CNY") → "1,234.50"
//   tokens   — whole tokens                                 tokens("2000000")     → "2,000,000"
//   percent  — signed, two decimals                         percent("-1.5")       → "-1.50%"
// Values go in as decimal strings: Intl formats strings exactly, never through a float.

const lang = document.documentElement.lang || "en";
const cache = new Map();
export const EMPTY = "—";

function formatter(minDecimals, maxDecimals, extra = {}) {
  const key = `${minDecimals}:${maxDecimals}:${JSON.stringify(extra)}`;
  let value = cache.get(key);
  if (!value) {
    value = new Intl.NumberFormat(lang, {
      minimumFractionDigits: minDecimals,
      maximumFractionDigits: Math.max(minDecimals, maxDecimals),
      roundingMode: "halfEven", // as babel rounds on the server
      ...extra,
    });
    cache.set(key, value);
  }
  return value;
}

function blank(text) {
  return text === null || text === undefined || text === "";
}

export function number(text, minDecimals = 0, maxDecimals = minDecimals) {
  if (blank(text)) return EMPTY;
  return formatter(minDecimals, maxDecimals).format(String(text));
}

// A value on the tick (or lot) shows exactly its decimals; an average price between ticks, or a
// token balance finer than a lot, keeps its exact digits instead of being rounded.
export function price(text, tickDecimals) {
  return number(text, tickDecimals, 8);
}

export function quantity(text, lotDecimals) {
  return number(text, lotDecimals, 6);
}

export function currencyDecimals(currency) {
  try {
    return new Intl.NumberFormat("en", { style: "currency", currency }).resolvedOptions()
      .minimumFractionDigits;
  } catch {
    return 2;
  }
}

export function money(text, currency) {
  const decimals = currencyDecimals(currency);
  return number(text, decimals, decimals);
}

export function tokens(text) {
  return number(text, 0, 0);
}

export function percent(text) {
  if (blank(text)) return EMPTY;
  return `${formatter(2, 2, { signDisplay: "exceptZero" }).format(String(text))}%`;
}

// Every time on the site is UTC (the column heads say so), as the server renders them.
const timeFormat = new Intl.DateTimeFormat(lang, {
  hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false, timeZone: "UTC",
});

// An API time (RFC 3339 text) as a clock time.
export function clock(time) {
  return timeFormat.format(new Date(Date.parse(time)));
}

export function cssVar(name, fallback) {
  const value = getComputedStyle(document.body).getPropertyValue(name).trim();
  return value || fallback;
}
