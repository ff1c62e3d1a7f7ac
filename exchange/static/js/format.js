// Display helpers: locale-aware grouping of exact decimal strings (Intl formats strings exactly).

const lang = document.documentElement.lang || "en";
const cache = new Map();

export function number(text, minDecimals = 0, maxDecimals = 8) {
  if (text === null || text === undefined || text === "") return "—";
  const key = `${minDecimals}:${maxDecimals}`;
  let formatter = cache.get(key);
  if (!formatter) {
    formatter = new Intl.NumberFormat(lang, {
      minimumFractionDigits: minDecimals,
      maximumFractionDigits: maxDecimals,
    });
    cache.set(key, formatter);
  }
  return formatter.format(String(text));
}

const timeFormat = new Intl.DateTimeFormat(lang, {
  hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
});

export function clock(ms) {
  return timeFormat.format(new Date(Number(ms)));
}

export function cssVar(name, fallback) {
  const value = getComputedStyle(document.body).getPropertyValue(name).trim();
  return value || fallback;
}
