// The trade page: candles + volume, depth chart, order-book ladder, trade tape, ticker, and the
// order form's exact preview. All live data comes over the one feed websocket.
import {
  CandlestickSeries, HistogramSeries, AreaSeries, LineType, createChart, createYieldCurveChart,
} from "lightweight-charts";
import * as D from "exchange/decimal";
import { Feed, Book } from "exchange/feed";
import { clock, cssVar, money, number, percent, price, quantity, tokens } from "exchange/format";

const config = JSON.parse(document.getElementById("trade-config").textContent);
const symbol = config.symbol;
const priceDecimals = D.decimalsOf(config.tick);
const lotDecimals = D.decimalsOf(config.lot);
const up = cssVar("--up", "#26a69a");
const down = cssVar("--down", "#ef5350");
const text = cssVar("--muted", "#8a96a3");
const line = cssVar("--line", "#2a323c");
const LEVELS = 14;
const labels = config.labels;
const formatPrice = (value) => price(value, priceDecimals);
const formatQuantity = (value) => quantity(value, lotDecimals);
const formatMoney = (value) => money(value, config.quote);

const statusDot = document.querySelector("[data-testid=feed-status]");
const feed = new Feed({
  onStatus: (status) => {
    statusDot.dataset.status = status;
    statusDot.title = status;
  },
});

// --- charts -----------------------------------------------------------------------------------
const chartOptions = {
  autoSize: true,
  layout: { background: { color: "transparent" }, textColor: text, attributionLogo: true },
  grid: { vertLines: { color: line }, horzLines: { color: line } },
  rightPriceScale: { borderColor: line },
};
const priceChart = createChart(document.getElementById("price-chart"), {
  ...chartOptions,
  timeScale: { borderColor: line, timeVisible: true, secondsVisible: false, rightOffset: 6, barSpacing: 9 },
  crosshair: { mode: 0 },
});
const candles = priceChart.addSeries(CandlestickSeries, {
  upColor: up, downColor: down, borderUpColor: up, borderDownColor: down,
  wickUpColor: up, wickDownColor: down,
  priceFormat: { type: "price", precision: priceDecimals, minMove: Number(config.tick) },
});
const volume = priceChart.addSeries(HistogramSeries, {
  priceFormat: { type: "volume" }, priceScaleId: "", lastValueVisible: false, priceLineVisible: false,
});
volume.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
candles.priceScale().applyOptions({ scaleMargins: { top: 0.08, bottom: 0.25 } });

// The depth chart's horizontal axis is price, linear: a yield-curve chart spaces its integer
// "times" evenly, so each point's time is its price in ticks above the lowest price shown
// (depthBase), and a gap of ten ticks is ten times as wide as a gap of one. The vertical axis is
// the cumulative quantity and starts at zero.
let depthBase = 0n;
const tickStep = D.parse(config.tick);
const depthPrice = (offset) => formatPrice(D.toText(D.fromSteps(depthBase + BigInt(offset), tickStep)));
const depthChart = createYieldCurveChart(document.getElementById("depth-chart"), {
  ...chartOptions,
  handleScroll: false,
  handleScale: false,
  timeScale: { borderColor: line, minBarSpacing: 0.01 },
  leftPriceScale: { visible: false },
  rightPriceScale: { visible: true, borderColor: line },
  yieldCurve: { baseResolution: 1, minimumTimeRange: 1, startTimeRange: 0 },
  localization: {
    timeFormatter: depthPrice,
    priceFormatter: (q) => number(q.toFixed(lotDecimals), 0, lotDecimals),
  },
});
const fromZero = (original) => {
  const range = original();
  if (range) range.priceRange.minValue = 0;
  return range;
};
const depthBids = depthChart.addSeries(AreaSeries, {
  lineColor: up, topColor: up + "66", bottomColor: up + "11", lineType: LineType.WithSteps,
  lineWidth: 2, priceLineVisible: false, lastValueVisible: false, autoscaleInfoProvider: fromZero,
  priceScaleId: "right",
});
const depthAsks = depthChart.addSeries(AreaSeries, {
  lineColor: down, topColor: down + "66", bottomColor: down + "11", lineType: LineType.WithSteps,
  lineWidth: 2, priceLineVisible: false, lastValueVisible: false, autoscaleInfoProvider: fromZero,
  priceScaleId: "right",
});
depthChart.priceScale("right").applyOptions({ scaleMargins: { top: 0.1, bottom: 0 } });

let interval = "1m";
let lastCandleTime = 0;
// How many candles the chart holds, for tests and diagnostics (not shown: a bare count on the
// chart meant nothing to a trader).
const candleCount = document.getElementById("price-chart");

// The API's times are RFC 3339 text; the chart's are Unix seconds.
function chartTime(c) {
  return Date.parse(c.time) / 1000;
}

function candlePoint(c) {
  return {
    time: chartTime(c), open: Number(c.open), high: Number(c.high), low: Number(c.low),
    close: Number(c.close),
  };
}

function volumePoint(c) {
  return { time: chartTime(c), value: Number(c.volume), color: Number(c.close) >= Number(c.open) ? up + "88" : down + "88" };
}

async function loadCandles() {
  const wanted = interval;
  const response = await fetch(`${config.urls.candles}?interval=${wanted}&limit=500`);
  if (!response.ok || wanted !== interval) return;
  // without "since" the latest candles come newest first; the chart wants them oldest first
  const list = [...(await response.json()).results].reverse();
  candles.setData(list.map(candlePoint));
  volume.setData(list.map(volumePoint));
  lastCandleTime = list.length ? chartTime(list[list.length - 1]) : 0;
  candleCount.dataset.candleCount = String(list.length);
}

feed.on("candles", (message) => {
  if (message.market !== symbol || message.channel !== `candles:${interval}`) return;
  const c = message.candle;
  const time = chartTime(c);
  if (time < lastCandleTime) return; // an older candle cannot be updated in place
  if (time > lastCandleTime) {
    candleCount.dataset.candleCount = String(Number(candleCount.dataset.candleCount || 0) + 1);
  }
  lastCandleTime = time;
  candles.update(candlePoint(c));
  volume.update(volumePoint(c));
});

for (const button of document.querySelectorAll("[data-interval]")) {
  button.addEventListener("click", () => {
    if (button.dataset.interval === interval) return;
    feed.unsubscribe([`candles:${interval}`], [symbol]);
    interval = button.dataset.interval;
    document.querySelectorAll("[data-interval]").forEach((b) => b.classList.toggle("active", b === button));
    loadCandles().then(() => feed.subscribe([`candles:${interval}`], [symbol]));
  });
}

// --- order book -------------------------------------------------------------------------------
const book = new Book(config.tick, config.lot);
const asksEl = document.getElementById("asks");
const bidsEl = document.getElementById("bids");
const spreadText = document.getElementById("spread-text");

function renderSide(el, levels, reverse) {
  let cumulative = D.parse("0");
  const rows = levels.slice(0, LEVELS).map((level) => {
    cumulative = D.add(cumulative, level.quantity);
    return { ...level, sum: cumulative };
  });
  const max = rows.length ? Number(D.toText(rows[rows.length - 1].sum)) : 1;
  const ordered = reverse ? [...rows].reverse() : rows;
  const fragment = document.createDocumentFragment();
  for (const row of ordered) {
    const div = document.createElement("div");
    div.className = "lvl";
    div.dataset.price = row.price;
    div.dataset.quantity = row.quantity;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.max(1, (Number(D.toText(row.sum)) / max) * 100)}%`;
    const p = document.createElement("span");
    p.className = "p";
    p.textContent = formatPrice(row.price);
    const q = document.createElement("span");
    q.className = "q";
    q.textContent = formatQuantity(row.quantity);
    const t = document.createElement("span");
    t.className = "t";
    t.textContent = formatQuantity(D.toText(row.sum));
    div.append(bar, p, q, t);
    fragment.append(div);
  }
  el.replaceChildren(fragment);
}

const DEPTH_LEVELS = 50;
// Levels further than this from the best price are left out, so that one stray order far away
// does not squeeze the book into a sliver (and the axis stays a few thousand ticks at most).
const DEPTH_SPAN = 0.15;

function renderDepth(bids, asks) {
  const ticks = (value) => D.stepsIn(value, tickStep);
  const best = bids.length ? ticks(bids[0].price) : asks.length ? ticks(asks[0].price) : 0n;
  const span = BigInt(Math.max(20, Math.ceil(Number(best) * DEPTH_SPAN)));
  const near = (level) => {
    const distance = ticks(level.price) - best;
    return (distance < 0n ? -distance : distance) <= span;
  };
  const shownBids = bids.slice(0, DEPTH_LEVELS).filter(near);
  const shownAsks = asks.slice(0, DEPTH_LEVELS).filter(near);
  if (!shownBids.length && !shownAsks.length) {
    depthBids.setData([]);
    depthAsks.setData([]);
    return;
  }
  // Centred on the mid price, wide enough for the furthest level shown, plus a margin: each
  // side's curve then runs on to the edge of the chart, as a trader expects.
  const bidTicks = shownBids.map((level) => ticks(level.price));
  const askTicks = shownAsks.map((level) => ticks(level.price));
  const low = bidTicks.length ? bidTicks[0] : askTicks[0];
  const high = askTicks.length ? askTicks[0] : bidTicks[0];
  const reach = [...bidTicks, ...askTicks].reduce((widest, t) => {
    const d = 2n * t - (low + high);
    return (d < 0n ? -d : d) > widest ? (d < 0n ? -d : d) : widest;
  }, 0n) / 2n;
  const half = reach + reach / 4n + 2n;
  const base = (low + high) / 2n - half > 0n ? (low + high) / 2n - half : 0n;
  if (base !== depthBase) {
    depthBase = base;
    // the chart caches the axis labels it formatted: applying the formatter again clears them
    depthChart.applyOptions({ localization: { timeFormatter: depthPrice } });
  }
  const edge = (low + high) / 2n + half;
  const at = (tick) => Number(tick - depthBase);
  const cumulative = (levels) => {
    let sum = D.parse("0");
    return levels.map((level) => {
      sum = D.add(sum, level.quantity);
      return Number(D.toText(sum));
    });
  };
  // Bids (best first): the amount a seller could sell down to a price is held from that price
  // up to the next better bid; the worst bid's amount runs to the left edge.
  const bidSums = cumulative(shownBids);
  const bidPoints = [];
  for (let i = shownBids.length - 1; i >= 0; i -= 1) {
    const from = i === shownBids.length - 1 ? depthBase : bidTicks[i + 1] + 1n;
    if (from <= bidTicks[i]) bidPoints.push({ time: at(from), value: bidSums[i] });
  }
  if (shownBids.length) bidPoints.push({ time: at(bidTicks[0]), value: bidSums[0] });
  // Asks (best first): the amount a buyer could buy up to a price, on to the right edge.
  const askSums = cumulative(shownAsks);
  const askPoints = shownAsks.map((level, i) => ({ time: at(askTicks[i]), value: askSums[i] }));
  if (shownAsks.length && edge > askTicks[askTicks.length - 1]) {
    askPoints.push({ time: at(edge), value: askSums[askSums.length - 1] });
  }
  depthBids.setData(dedupe(bidPoints));
  depthAsks.setData(dedupe(askPoints));
  depthChart.timeScale().fitContent();
}

// Points in strictly increasing time, the later value winning (the chart refuses duplicates).
function dedupe(points) {
  const out = [];
  for (const point of points) {
    if (out.length && out[out.length - 1].time >= point.time) out[out.length - 1] = point;
    else out.push(point);
  }
  return out;
}

let bookFrame = 0;
function renderBook() {
  if (bookFrame) return;
  bookFrame = requestAnimationFrame(() => {
    bookFrame = 0;
    const bids = book.sorted("bids");
    const asks = book.sorted("asks");
    renderSide(asksEl, asks, true);
    renderSide(bidsEl, bids, false);
    if (bids.length && asks.length) {
      const spread = D.sub(asks[0].price, bids[0].price);
      spreadText.textContent = `${labels.spread} ${formatPrice(D.toText(spread))}`;
    } else {
      spreadText.textContent = "";
    }
    renderDepth(bids, asks);
    bestBid = bids.length ? bids[0].price : null;
    bestAsk = asks.length ? asks[0].price : null;
    updateForm();
    document.body.dataset.bookSeq = String(book.seq ?? "");
  });
}

feed.on("book", (message) => {
  if (message.market !== symbol) return;
  const result = book.onMessage(message);
  if (result !== "ok") {
    feed.resync(symbol);
    return;
  }
  renderBook();
});

for (const el of [asksEl, bidsEl]) {
  el.addEventListener("click", (event) => {
    const level = event.target.closest(".lvl");
    if (!level) return;
    const price = document.getElementById("id_price");
    if (!price) return;
    price.value = D.toText(level.dataset.price, priceDecimals);
    document.getElementById("type-limit").checked = true;
    updateForm();
    price.focus();
  });
}

// --- trades tape and ticker -----------------------------------------------------------------------
const tape = document.getElementById("tape");

feed.on("trades", (message) => {
  if (message.market !== symbol) return;
  const fragment = document.createDocumentFragment();
  for (const trade of [...message.trades].reverse()) {
    const row = document.createElement("div");
    row.className = `tr ${trade.taker_side === "buy" ? "up" : "down"} fresh`;
    row.dataset.id = trade.id;
    const p = document.createElement("span");
    p.className = "p";
    p.textContent = formatPrice(trade.price);
    const q = document.createElement("span");
    q.className = "q";
    q.textContent = formatQuantity(trade.quantity);
    const t = document.createElement("span");
    t.className = "time";
    t.textContent = clock(trade.time);
    row.append(p, q, t);
    fragment.append(row);
  }
  tape.prepend(fragment);
  while (tape.children.length > 60) tape.lastElementChild.remove();
  setTimeout(() => tape.querySelectorAll(".fresh").forEach((r) => r.classList.remove("fresh")), 600);
});

const tickerEls = Object.fromEntries(
  [...document.querySelectorAll("[data-ticker]")].map((el) => [el.dataset.ticker, el]),
);
feed.on("ticker", (t) => {
  if (t.market !== symbol) return;
  const direction = t.change_24h_percent === null ? "flat" : Number(t.change_24h_percent) > 0 ? "up" : Number(t.change_24h_percent) < 0 ? "down" : "flat";
  if (t.last) {
    tickerEls.last.textContent = formatPrice(t.last);
    tickerEls["last-mid"].textContent = formatPrice(t.last);
    document.title = `${formatPrice(t.last)} · ${symbol}`;
  }
  tickerEls.last.className = `num ${direction}`;
  tickerEls.change.className = `num ${direction}`;
  tickerEls.change.textContent = percent(t.change_24h_percent);
  tickerEls.high.textContent = formatPrice(t.high_24h);
  tickerEls.low.textContent = formatPrice(t.low_24h);
  tickerEls.volume.textContent = formatQuantity(t.volume_24h || "0");
});

// --- order form -------------------------------------------------------------------------------------
const form = document.getElementById("order-form");
let bestAsk = null;
let bestBid = null;

function selected(name) {
  return form.querySelector(`input[name=${name}]:checked`)?.value;
}

function setText(id, value) {
  const el = document.getElementById(id);
  if (el) el.textContent = value;
}

function updateForm() {
  if (!form) return;
  const side = selected("side");
  const type = selected("type");
  const price = document.getElementById("id_price");
  const quantity = document.getElementById("id_quantity");
  const tif = document.getElementById("id_time_in_force");
  const postOnly = document.getElementById("id_post_only");
  const submit = document.getElementById("order-submit");
  submit.className = `submit ${side}`;
  submit.textContent = side === "buy" ? submit.dataset.labelBuy : submit.dataset.labelSell;
  price.disabled = type === "market";
  document.getElementById("price-field").classList.toggle("disabled", type === "market");
  document.getElementById("expire-field").hidden = tif.value !== "GTD";
  postOnly.disabled = type === "market";

  const q = D.parse(quantity.value);
  // tokens = MTok × 1,000,000, exactly
  setText("token-count", q && q.n > 0n ? tokens(D.toText(D.mul(q, "1000000"))) : "0");
  const reference = type === "market" ? (side === "buy" ? bestAsk : bestBid) : price.value;
  const p = D.parse(reference);
  if (!q || !p || q.n <= 0n || p.n <= 0n) {
    for (const id of ["pv-notional", "pv-fee", "pv-total"]) setText(id, "—");
    setText("pv-fee-rate", "");
    return;
  }
  // Maker fee when the order rests, taker fee when it crosses the book (or is a market order).
  let taker = type === "market";
  if (type === "limit" && !postOnly.checked) {
    if (side === "buy" && bestAsk && D.cmp(p, bestAsk) >= 0) taker = true;
    if (side === "sell" && bestBid && D.cmp(p, bestBid) <= 0) taker = true;
  }
  const rate = taker ? config.taker_fee : config.maker_fee;
  const notional = D.mul(p, q);
  const fee = D.ceilTo(D.mul(notional, rate), config.quote_decimals);
  const total = side === "buy" ? D.add(notional, fee) : D.sub(notional, fee);
  const prefix = type === "market" ? "≈ " : "";
  setText("pv-notional", prefix + formatMoney(D.toText(notional)));
  setText("pv-fee", prefix + formatMoney(D.toText(fee)));
  setText("pv-total", prefix + formatMoney(D.toText(total)));
  setText("pv-fee-rate", `${taker ? labels.taker : labels.maker} ${D.toText(D.mul(rate, "100"))}%`);
}

function percentOfBalance(pct) {
  const balances = document.getElementById("balances");
  const side = selected("side");
  const lot = D.parse(config.lot);
  let lots;
  if (side === "sell") {
    const tokens = BigInt(balances.dataset.tokens || "0");
    lots = (tokens / BigInt(config.tokens_per_lot)) * BigInt(pct) / 100n;
  } else {
    const price = selected("type") === "market" ? bestAsk : document.getElementById("id_price").value;
    const p = D.parse(price);
    if (!p || p.n <= 0n) return;
    const available = { n: BigInt(balances.dataset.quoteUnits || "0"), s: config.quote_decimals };
    const budget = D.mul(available, { n: BigInt(pct), s: 2 });
    // the exchange holds notional + fee at the higher rate + one ledger unit per lot
    const rate = D.cmp(config.maker_fee, config.taker_fee) > 0 ? config.maker_fee : config.taker_fee;
    const unit = { n: 1n, s: config.quote_decimals };
    const perLot = D.add(D.mul(D.mul(p, lot), D.add("1", rate)), unit);
    lots = D.stepsIn(budget, perLot);
    const hold = (n) => {
      const notional = D.mul(D.mul(p, lot), { n, s: 0 });
      return D.add(D.add(notional, D.ceilTo(D.mul(notional, rate), config.quote_decimals)), { n: n, s: config.quote_decimals });
    };
    while (lots > 0n && D.cmp(hold(lots), budget) > 0) lots -= 1n;
  }
  document.getElementById("id_quantity").value = lots > 0n ? D.toText(D.fromSteps(lots, lot)) : "";
  updateForm();
}

if (form) {
  form.addEventListener("input", updateForm);
  form.addEventListener("change", updateForm);
  for (const button of form.querySelectorAll("[data-pct]")) {
    button.addEventListener("click", () => percentOfBalance(Number(button.dataset.pct)));
  }
  updateForm();
}

// --- my orders and fills: the user channel keeps the order message current, announces each fill
// and refreshes the htmx panels ----------------------------------------------------------------------
const STATUS_RANK = { pending: 0, open: 1, partially_filled: 2, filled: 3, cancelled: 3, rejected: 3 };
// The latest state heard of each order: an update can arrive before the order form's answer is
// swapped in, and the message must not then show the older state.
const orderStates = new Map();
const notices = document.getElementById("fill-notices");
let refreshTimer = 0;

function newer(state, known) {
  if (!known) return true;
  const rank = (s) => STATUS_RANK[s.status] ?? 0;
  if (rank(state) !== rank(known)) return rank(state) > rank(known);
  return D.cmp(state.filled_quantity || "0", known.filled_quantity || "0") >= 0;
}

function showOrderState(message) {
  const state = orderStates.get(Number(message.dataset.orderId));
  if (!state) return;
  if (!newer(state, { status: message.dataset.status, filled_quantity: message.dataset.filled })) return;
  message.dataset.status = state.status;
  message.dataset.filled = state.filled_quantity;
  message.querySelector("[data-field=status]").textContent = labels.status[state.status] || state.status;
  message.querySelector("[data-field=filled]").textContent = formatQuantity(state.filled_quantity);
  const reason = state.cancel_reason;
  message.querySelector("[data-field=reason]").textContent = reason ? labels.reason[reason] || reason : "";
  message.classList.toggle("success", state.status !== "cancelled" && state.status !== "rejected");
  message.classList.toggle("warning", state.status === "cancelled" || state.status === "rejected");
}

function notify(text, className, testid) {
  const notice = document.createElement("div");
  notice.className = `flash fill-notice ${className}`;
  notice.dataset.testid = testid;
  notice.textContent = text;
  notices.append(notice);
  setTimeout(() => notice.remove(), 8000);
}

function announceFill(fill) {
  const template = fill.side === "buy" ? labels.fill_buy : labels.fill_sell;
  const text = template
    .replace("{quantity}", formatQuantity(fill.quantity))
    .replace("{price}", `${formatPrice(fill.price)} ${config.quote}`);
  notify(text, `success ${fill.side === "buy" ? "up" : "down"}`, "fill-notice");
}

// An order the exchange ended (self-trade prevention, IOC, FOK, post-only, expiry) is announced
// unless the order message already says it; a cancel the user asked for needs no notice.
function announceEnd(update, shown) {
  const reason = update.cancel_reason;
  if (shown || !reason || reason === "user" || (update.status !== "cancelled" && update.status !== "rejected")) return;
  const text = labels.order_ended
    .replace("{id}", String(update.id))
    .replace("{reason}", labels.reason[reason] || reason);
  notify(text, "warning", "order-notice");
}

feed.on("user", (message) => {
  const mine = message.updates.filter((u) => u.market === symbol);
  if (!mine.length) return;
  for (const update of mine) {
    if (update.kind === "order") {
      const known = orderStates.get(update.id);
      if (newer(update, known)) orderStates.set(update.id, update);
      const shown = document.querySelector(`.order-message[data-order-id="${update.id}"]`);
      if (shown) showOrderState(shown);
      const endedBefore = known && STATUS_RANK[known.status] === 3;
      if (notices && !endedBefore) announceEnd(update, shown);
    } else if (update.kind === "fill" && notices) {
      announceFill(update);
    }
  }
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => window.htmx?.trigger(document.body, "orders-changed"), 150);
});

document.body.addEventListener("htmx:afterSwap", () => {
  for (const message of document.querySelectorAll(".order-message[data-order-id]")) {
    showOrderState(message);
  }
});

// --- start -------------------------------------------------------------------------------------------
loadCandles().finally(() => {
  const channels = ["ticker", "trades", "book", `candles:${interval}`];
  feed.subscribe(channels, [symbol]);
  if (config.logged_in) feed.subscribe(["user"]);
});
