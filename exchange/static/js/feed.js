// ONE websocket to the public /ws/v1 feed per page: subscriptions, reconnect with backoff,
// and the order book kept from snapshot + updates (seq gap or checksum mismatch → resubscribe).
import { of, rescale } from "exchange/decimal";

export class Feed {
  constructor({ path = "/ws/v1", onStatus = () => {} } = {}) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    this.url = `${scheme}//${location.host}${path}`;
    this.onStatus = onStatus;
    this.handlers = new Map();
    this.subscriptions = [];
    this.attempt = 0;
    this.socket = null;
    this.lastMessage = 0;
    this.open();
    setInterval(() => this.watchdog(), 5000);
  }

  on(channel, handler) {
    if (!this.handlers.has(channel)) this.handlers.set(channel, []);
    this.handlers.get(channel).push(handler);
    return this;
  }

  open() {
    this.onStatus("connecting");
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.attempt = 0;
      this.lastMessage = Date.now();
      // live once the server confirms a subscription: with its Redis down it accepts the
      // socket but refuses subscriptions (service_unavailable, then close 1013)
      if (!this.subscriptions.length) this.onStatus("live");
      for (const subscription of this.subscriptions) this.send({ op: "subscribe", ...subscription });
    });
    socket.addEventListener("message", (event) => {
      this.lastMessage = Date.now();
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      this.dispatch(message);
    });
    socket.addEventListener("close", () => {
      if (this.socket !== socket) return;
      this.onStatus("offline");
      // Exponential backoff with jitter, capped at 15 s.
      const delay = Math.min(15000, 500 * 2 ** this.attempt) * (0.5 + Math.random() / 2);
      this.attempt += 1;
      setTimeout(() => this.open(), delay);
    });
  }

  watchdog() {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return;
    if (Date.now() - this.lastMessage > 20000) {
      this.socket.close();
    } else if (Date.now() - this.lastMessage > 8000) {
      this.send({ op: "ping" });
    }
  }

  send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(message));
    }
  }

  subscribe(channels, markets = []) {
    const subscription = markets.length ? { channels, markets } : { channels };
    this.subscriptions.push(subscription);
    this.send({ op: "subscribe", ...subscription });
  }

  unsubscribe(channels, markets = []) {
    this.subscriptions = this.subscriptions
      .map((s) => ({ ...s, channels: s.channels.filter((c) => !channels.includes(c)) }))
      .filter((s) => s.channels.length);
    this.send({ op: "unsubscribe", channels, markets });
  }

  /** Ask for a fresh book snapshot (after a gap or a checksum mismatch). */
  resync(market) {
    this.send({ op: "subscribe", channels: ["book"], markets: [market] });
  }

  dispatch(message) {
    if (message.type === "subscribed") this.onStatus("live");
    if (message.type === "error") {
      if (message.code === "service_unavailable") this.onStatus("offline");
      console.warn("feed:", message.code, message.message);
      return;
    }
    const channel = message.channel?.startsWith("candles:") ? "candles" : message.channel;
    for (const handler of this.handlers.get(channel) || []) handler(message);
  }
}

// CRC-32 (IEEE) as zlib computes it, for the book checksum.
const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[i] = c >>> 0;
  }
  return table;
})();

function crc32(bytes) {
  let crc = 0xffffffff;
  for (const byte of bytes) crc = CRC_TABLE[(crc ^ byte) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

function steps(text, step) {
  // exact integer count of ``step`` in ``text`` (ticks of a price, lots of a quantity)
  const value = of(text);
  const unit = of(step);
  const scale = Math.max(value.s, unit.s);
  return rescale(value, scale) / rescale(unit, scale);
}

export class Book {
  constructor(tick, lot) {
    this.tick = tick;
    this.lot = lot;
    this.bids = new Map(); // price text → quantity text
    this.asks = new Map();
    this.seq = null;
  }

  static apply(side, levels) {
    for (const [price, quantity] of levels) {
      if (of(quantity).n === 0n) side.delete(price);
      else side.set(price, quantity);
    }
  }

  /** Returns "ok", "gap" or "checksum" (the last two: resubscribe for a snapshot). */
  onMessage(message) {
    if (message.type === "snapshot") {
      this.bids = new Map();
      this.asks = new Map();
      Book.apply(this.bids, message.bids);
      Book.apply(this.asks, message.asks);
      this.seq = message.seq;
      return this.checksum() === message.checksum ? "ok" : "checksum";
    }
    if (this.seq === null) return "ok";
    if (message.seq !== this.seq + 1) {
      this.seq = null;
      return "gap";
    }
    Book.apply(this.bids, message.bids);
    Book.apply(this.asks, message.asks);
    this.seq = message.seq;
    if (this.checksum() !== message.checksum) {
      this.seq = null;
      return "checksum";
    }
    return "ok";
  }

  sorted(side) {
    const levels = [...(side === "bids" ? this.bids : this.asks).entries()].map(([p, q]) => ({
      price: p, quantity: q, ticks: steps(p, this.tick), lots: steps(q, this.lot),
    }));
    levels.sort((a, b) => (a.ticks < b.ticks ? -1 : a.ticks > b.ticks ? 1 : 0));
    if (side === "bids") levels.reverse();
    return levels;
  }

  checksum() {
    const levels = [...this.sorted("bids").slice(0, 10), ...this.sorted("asks").slice(0, 10)];
    const bytes = new Uint8Array(levels.length * 16);
    const view = new DataView(bytes.buffer);
    levels.forEach((level, i) => {
      view.setBigUint64(i * 16, level.ticks);
      view.setBigUint64(i * 16 + 8, level.lots);
    });
    return crc32(bytes);
  }
}
