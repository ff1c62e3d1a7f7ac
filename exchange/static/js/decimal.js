// Exact decimal arithmetic on BigInt for money and quantities: a value is {n, s} = n / 10^s.
// Never float: prices, quantities, fees and totals shown in the order form are computed here.

const TEN = 10n;

export function parse(text) {
  if (text === null || text === undefined) return null;
  const value = String(text).trim();
  const match = /^(-)?(\d*)(?:\.(\d*))?$/.exec(value);
  if (!match || (match[2] === "" && (match[3] === undefined || match[3] === ""))) return null;
  const fraction = match[3] || "";
  const digits = (match[2] || "0") + fraction;
  const n = BigInt(digits) * (match[1] ? -1n : 1n);
  return { n, s: fraction.length };
}

export function of(value) {
  return typeof value === "object" && value !== null ? value : parse(value);
}

export function rescale(d, s) {
  if (s >= d.s) return d.n * TEN ** BigInt(s - d.s);
  throw new RangeError("rescale would lose digits");
}

function align(a, b) {
  const s = Math.max(a.s, b.s);
  return [rescale(a, s), rescale(b, s), s];
}

export function add(a, b) {
  const [x, y, s] = align(of(a), of(b));
  return { n: x + y, s };
}

export function sub(a, b) {
  const [x, y, s] = align(of(a), of(b));
  return { n: x - y, s };
}

export function mul(a, b) {
  a = of(a);
  b = of(b);
  return { n: a.n * b.n, s: a.s + b.s };
}

export function cmp(a, b) {
  const [x, y] = align(of(a), of(b));
  return x < y ? -1 : x > y ? 1 : 0;
}

export function isZero(a) {
  return of(a).n === 0n;
}

/** Round to ``s`` decimals towards +infinity (fees are rounded up, in the exchange's favour). */
export function ceilTo(a, s) {
  a = of(a);
  if (a.s <= s) return a;
  const div = TEN ** BigInt(a.s - s);
  let q = a.n / div;
  if (a.n % div !== 0n && a.n > 0n) q += 1n;
  return { n: q, s };
}

/** How many whole ``step``s fit in ``a`` (floor, for non-negative values). */
export function stepsIn(a, step) {
  const [x, y] = align(of(a), of(step));
  if (y === 0n) return 0n;
  return x / y;
}

/** Whether ``a`` is an exact multiple of ``step``. */
export function isMultiple(a, step) {
  const [x, y] = align(of(a), of(step));
  return y !== 0n && x % y === 0n;
}

export function fromSteps(count, step) {
  step = of(step);
  return { n: BigInt(count) * step.n, s: step.s };
}

/** Plain decimal text, trailing zeros trimmed but at least ``minDecimals`` decimals. */
export function toText(a, minDecimals = 0) {
  a = of(a);
  const negative = a.n < 0n;
  let digits = (negative ? -a.n : a.n).toString().padStart(a.s + 1, "0");
  let whole = a.s ? digits.slice(0, digits.length - a.s) : digits;
  let fraction = a.s ? digits.slice(digits.length - a.s) : "";
  fraction = fraction.replace(/0+$/, "");
  while (fraction.length < minDecimals) fraction += "0";
  whole = whole.replace(/^0+(?=\d)/, "");
  return (negative ? "-" : "") + whole + (fraction ? "." + fraction : "");
}

/** Number of decimals of a step such as "0.01" (2) or "0.001" (3). */
export function decimalsOf(step) {
  const d = of(step);
  return toText(d).split(".")[1]?.length || 0;
}
