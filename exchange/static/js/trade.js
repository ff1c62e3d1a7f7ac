// The trade page: candles + volume, depth chart, order-book ladder, trade tape, ticker, and the
// order form's exact preview. All live data comes over the one feed websocket.
import {
  CandlestickSeries, HistogramSeries, AreaSeries, LineType, createChart, createOptionsChart,
} from "lightweight-charts";
import * as D from "exchange/decimal";
import { Feed, Book } from "exchange/feed";
import { clock, cssVar, number } from "exchange/format";

const config = JSON.parse(document.getElementById("trade-config").textContent);
const symbol = config.symbol;
const priceDecimals = D.decimalsOf(config.tick);
const lotDecimals = D.decimalsOf(config.lot);
const up = cssVar("--up", "#26a69a");
const down = cssVar("--down", "#ef5350");
const text = cssVar("--muted", "#8a96a3");
const line = cssVar("--line", "#2a323c");
const LEVELS = 14;

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

const depthChart = createOptionsChart(document.getElementById("depth-chart"), {
  ...chartOptions,
  handleScroll: false,
  handleScale: false,
  timeScale: { borderColor: line },
  localization: { precision: priceDecimals, priceFormatter: (q) => q.toFixed(lotDecimals) },
});
const depthBids = depthChart.addSeries(AreaSeries, {
  lineColor: up, topColor: up + "66", bottomColor: up + "11", lineType: LineType.WithSteps,
  lineWidth: 2, priceLineVisible: false, lastValueVisible: false,
});
const depthAsks = depthChart.addSeries(AreaSeries, {
  lineColor: down, topColor: down + "66", bottomColor: down + "11", lineType: LineType.WithSteps,
  lineWidth: 2, priceLineVisible: false, lastValueVisible: false,
});

let interval = "1m";
let lastCandleTime = 0;
const candleCount = document.querySelector("[data-testid=candle-count]");

function candlePoint(c) {
  return {
    time: c.start, open: Number(c.open), high: Number(c.high), low: Number(c.low),
    close: Number(c.close),
  };
}

function volumePoint(c) {
  return { time: c.start, value: Number(c.volume), color: Number(c.close) >= Number(c.open) ? up + "88" : down + "88" };
}

async function loadCandles() {
  const wanted = interval;
  const response = await fetch(`${config.urls.candles}?interval=${wanted}&limit=500`);
  if (!response.ok || wanted !== interval) return;
  const rows = await response.json();
  const list = Array.isArray(rows) ? rows : rows.candles || rows.results || [];
  candles.setData(list.map(candlePoint));
  volume.setData(list.map(volumePoint));
  lastCandleTime = list.length ? list[list.length - 1].start : 0;
  candleCount.textContent = String(list.length);
  candleCount.dataset.count = String(list.length);
}

feed.on("candles", (message) => {
  if (message.market !== symbol || message.channel !== `candles:${interval}`) return;
  const c = message.candle;
  if (c.start < lastCandleTime) return; // an older candle cannot be updated in place
  if (c.start > lastCandleTime) {
    candleCount.dataset.count = String(Number(candleCount.dataset.count || 0) + 1);
    candleCount.textContent = candleCount.dataset.count;
  }
  lastCandleTime = c.start;
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
    p.textContent = D.toText(row.price, priceDecimals);
    const q = document.createElement("span");
    q.className = "q";
    q.textContent = number(row.quantity, lotDecimals, lotDecimals);
    const t = document.createElement("span");
    t.className = "t";
    t.textContent = number(D.toText(row.sum), lotDecimals, lotDecimals);
    div.append(bar, p, q, t);
    fragment.append(div);
  }
  el.replaceChildren(fragment);
}

function renderDepth(bids, asks) {
  const points = (levels) => {
    let cumulative = D.parse("0");
    return levels.map((level) => {
      cumulative = D.add(cumulative, level.quantity);
      return { time: Number(level.price), value: Number(D.toText(cumulative)) };
    });
  };
  depthBids.setData(points(bids.slice(0, 50)).reverse());
  depthAsks.setData(points(asks.slice(0, 50)));
  depthChart.timeScale().fitContent();
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
      spreadText.textContent = `${document.documentElement.lang.startsWith("zh") ? "价差" : "spread"} ${D.toText(spread, priceDecimals)}`;
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
for (const cell of tape.querySelectorAll(".time[data-ms]")) cell.textContent = clock(cell.dataset.ms);
for (const cell of tape.querySelectorAll(".p")) cell.textContent = D.toText(cell.textContent, priceDecimals);

feed.on("trades", (message) => {
  if (message.market !== symbol) return;
  const fragment = document.createDocumentFragment();
  for (const trade of [...message.trades].reverse()) {
    const row = document.createElement("div");
    row.className = `tr ${trade.taker_side === "buy" ? "up" : "down"} fresh`;
    row.dataset.id = trade.id;
    const p = document.createElement("span");
    p.className = "p";
    p.textContent = D.toText(trade.price, priceDecimals);
    const q = document.createElement("span");
    q.className = "q";
    q.textContent = trade.quantity;
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
    tickerEls.last.textContent = D.toText(t.last, priceDecimals);
    tickerEls["last-mid"].textContent = D.toText(t.last, priceDecimals);
    document.title = `${D.toText(t.last, priceDecimals)} · ${symbol}`;
  }
  tickerEls.last.className = `num ${direction}`;
  tickerEls.change.className = `num ${direction}`;
  tickerEls.change.textContent = t.change_24h_percent === null ? "—" : `${t.change_24h_percent}%`;
  tickerEls.high.textContent = t.high_24h ? D.toText(t.high_24h, priceDecimals) : "—";
  tickerEls.low.textContent = t.low_24h ? D.toText(t.low_24h, priceDecimals) : "—";
  tickerEls.volume.textContent = number(t.volume_24h, 0, lotDecimals);
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
  setText("token-count", q && q.n > 0n ? number(D.toText(D.mul(q, "1000000")), 0, 0) : "0");
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
  setText("pv-notional", prefix + number(D.toText(notional), 2, config.quote_decimals));
  setText("pv-fee", prefix + number(D.toText(fee), 2, config.quote_decimals));
  setText("pv-total", prefix + number(D.toText(total), 2, config.quote_decimals));
  setText("pv-fee-rate", `${taker ? "taker" : "maker"} ${D.toText(D.mul(rate, "100"))}%`);
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

// --- my orders and fills: the user channel refreshes the htmx panels --------------------------------
let refreshTimer = 0;
feed.on("user", (message) => {
  if (!message.updates.some((u) => u.market === symbol)) return;
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => window.htmx?.trigger(document.body, "orders-changed"), 150);
});

document.body.addEventListener("htmx:afterSwap", () => {
  for (const cell of document.querySelectorAll("#orders-panel .time[data-iso]")) {
    cell.textContent = clock(Date.parse(cell.dataset.iso));
  }
});
for (const cell of document.querySelectorAll("#orders-panel .time[data-iso]")) {
  cell.textContent = clock(Date.parse(cell.dataset.iso));
}

// --- start -------------------------------------------------------------------------------------------
loadCandles().finally(() => {
  const channels = ["ticker", "trades", "book", `candles:${interval}`];
  feed.subscribe(channels, [symbol]);
  if (config.logged_in) feed.subscribe(["user"]);
});
