// The markets table, live: one ticker subscription for every market on the page.
import { decimalsOf } from "exchange/decimal";
import { Feed } from "exchange/feed";
import { percent, price, quantity } from "exchange/format";

const rows = new Map(
  [...document.querySelectorAll("tr[data-market]")].map((row) => [row.dataset.market, row]),
);
const statusDot = document.querySelector("[data-testid=feed-status]");

if (rows.size) {
  const feed = new Feed({
    onStatus: (status) => {
      if (statusDot) statusDot.dataset.status = status;
    },
  });
  feed.on("ticker", (t) => {
    const row = rows.get(t.market);
    if (!row) return;
    const cell = (name) => row.querySelector(`[data-field=${name}]`);
    const tickDecimals = decimalsOf(row.dataset.tick || "0.01");
    const lotDecimals = decimalsOf(row.dataset.lot || "0.001");
    const formatPrice = (value) => price(value, tickDecimals);
    const previous = cell("last").textContent;
    if (t.last) cell("last").textContent = formatPrice(t.last);
    if (previous !== cell("last").textContent) {
      row.classList.remove("flash-row");
      void row.offsetWidth; // restart the highlight animation
      row.classList.add("flash-row");
    }
    const change = t.change_24h_percent;
    const direction = change === null ? "flat" : Number(change) > 0 ? "up" : Number(change) < 0 ? "down" : "flat";
    cell("change").textContent = percent(change);
    cell("change").className = `num ${direction}`;
    cell("volume").textContent = quantity(t.volume_24h || "0", lotDecimals);
    cell("bid").textContent = formatPrice(t.bid);
    cell("ask").textContent = formatPrice(t.ask);
    row.dataset.updated = String(Date.now());
  });
  feed.subscribe(["ticker"], [...rows.keys()]);
}
