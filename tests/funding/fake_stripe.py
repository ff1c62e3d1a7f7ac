"""A small stateful fake of the Stripe API, served on loopback for the stripe library.

It implements the handful of endpoints the exchange calls (Checkout Sessions, Express accounts,
account links, transfers, balance transactions) and remembers Idempotency-Keys the way Stripe
does: the same key with the same parameters replays the first response and creates nothing;
with other parameters it is a 400 ``idempotency_error``; while the first request with a key
is still executing, another gets 409. A test can inject faults per request with ``fault``:
``"error"`` (a definite 400, saved for the key like Stripe saves it), ``"error500"`` (nothing
done, nothing saved), ``"timeout_before"`` (nothing done; answers after the client gave up) and
``"timeout_after"`` (done and saved; answers after the client gave up).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Call:
    method: str
    path: str
    idempotency_key: str | None
    params: dict[str, str]
    fault: str


@dataclass
class FakeStripe:
    server: ThreadingHTTPServer | None = None
    url: str = ""
    timeout_seconds: float = 0.6
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    transfers: list[dict[str, Any]] = field(default_factory=list)
    balance_transactions: list[dict[str, Any]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    # (method, path, idempotency key, params) -> fault name or "ok"
    fault: Callable[[str, str, str | None, dict[str, str]], str] | None = None
    _saved: dict[str, tuple[tuple[Any, ...], int, dict[str, Any]]] = field(default_factory=dict)
    _running: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> FakeStripe:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    # --- helpers for tests ----------------------------------------------------------------
    def new_id(self, prefix: str) -> str:
        return f"{prefix}_fake{next(self._ids)}"

    def calls_to(self, path: str) -> list[Call]:
        return [call for call in self.calls if call.path == path]

    def pay_session(self, session_id: str) -> dict[str, Any]:
        """The customer pays: a PaymentIntent, a charge and its balance transaction."""
        with self._lock:
            session = self.objects[session_id]
            payment_intent = self.new_id("pi")
            charge = {
                "id": self.new_id("ch"),
                "object": "charge",
                "payment_intent": payment_intent,
                "amount": session["amount_total"],
                "currency": session["currency"],
                "metadata": dict(session["metadata"]),
            }
            self.objects[charge["id"]] = charge
            session.update(payment_status="paid", status="complete", payment_intent=payment_intent)
            self._balance("charge", session["amount_total"], session["currency"], charge)
            return dict(session)

    def enable_account(self, account_id: str) -> None:
        self.objects[account_id].update(details_submitted=True, payouts_enabled=True)

    def _balance(self, kind: str, amount: int, currency: str, source: dict[str, Any]) -> None:
        self.balance_transactions.append(
            {
                "id": self.new_id("txn"),
                "object": "balance_transaction",
                "type": kind,
                "amount": amount,
                "currency": currency,
                "created": int(time.time()),
                "source": source["id"],
            }
        )

    # --- HTTP -----------------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length).decode() if length else ""
        params = dict(parse_qsl(body if method == "POST" else parts.query, keep_blank_values=True))
        key = handler.headers.get("Idempotency-Key")
        fault = "ok"
        if self.fault is not None:
            fault = self.fault(method, parts.path, key, params) or "ok"
        with self._lock:
            self.calls.append(Call(method, parts.path, key, params, fault))
        status, payload = self._respond(method, parts.path, key, params, fault)
        if fault.startswith("timeout"):
            time.sleep(self.timeout_seconds)
        try:
            data = json.dumps(payload).encode()
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.send_header("Request-Id", f"req_{next(self._ids)}")
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout): the outcome is unknown to it

    def _respond(
        self, method: str, path: str, key: str | None, params: dict[str, str], fault: str
    ) -> tuple[int, dict[str, Any]]:
        if method == "GET":
            return self._get(path, params)
        signature = (path, tuple(sorted(params.items())))
        with self._lock:
            if key is not None:
                if key in self._running:
                    return 409, _error(
                        "idempotency_error", "A request with this key is in progress."
                    )
                if key in self._saved:
                    saved_signature, status, payload = self._saved[key]
                    if saved_signature != signature:
                        return 400, _error(
                            "idempotency_error",
                            "Keys for idempotent requests can only be used with the same "
                            "parameters they were first used with.",
                        )
                    return status, payload
                self._running.add(key)
        try:
            if fault in ("error500", "timeout_before"):
                return 500, _error("api_error", "Something went wrong on Stripe's end.")
            if fault == "error":
                status, payload = (
                    400,
                    _error(
                        "invalid_request_error", "Insufficient funds.", code="balance_insufficient"
                    ),
                )
            else:
                status, payload = self._create(path, params)
            if key is not None:
                with self._lock:
                    self._saved[key] = (signature, status, payload)
            return status, payload
        finally:
            if key is not None:
                with self._lock:
                    self._running.discard(key)

    def _create(self, path: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        metadata = {k[9:-1]: v for k, v in params.items() if k.startswith("metadata[")}
        with self._lock:
            if path == "/v1/checkout/sessions":
                session = {
                    "id": self.new_id("cs"),
                    "object": "checkout.session",
                    "amount_total": int(params["line_items[0][price_data][unit_amount]"]),
                    "currency": params["line_items[0][price_data][currency]"],
                    "client_reference_id": params.get("client_reference_id"),
                    "metadata": metadata,
                    "payment_status": "unpaid",
                    "status": "open",
                    "payment_intent": None,
                }
                session["url"] = f"{self.url}/pay/{session['id']}"
                self.objects[session["id"]] = session
                return 200, session
            if path == "/v1/accounts":
                account = {
                    "id": self.new_id("acct"),
                    "object": "account",
                    "type": params.get("type"),
                    "email": params.get("email"),
                    "details_submitted": False,
                    "payouts_enabled": False,
                    "metadata": metadata,
                }
                self.objects[account["id"]] = account
                return 200, account
            if path == "/v1/account_links":
                return 200, {
                    "object": "account_link",
                    "url": f"{self.url}/onboard/{params['account']}",
                    "expires_at": int(time.time()) + 300,
                }
            if path == "/v1/transfers":
                transfer = {
                    "id": self.new_id("tr"),
                    "object": "transfer",
                    "amount": int(params["amount"]),
                    "currency": params["currency"],
                    "destination": params["destination"],
                    "metadata": metadata,
                }
                self.objects[transfer["id"]] = transfer
                self.transfers.append(transfer)
                self._balance("transfer", -transfer["amount"], transfer["currency"], transfer)
                return 200, transfer
        return 404, _error("invalid_request_error", f"Unrecognized request URL (POST: {path})")

    def _get(self, path: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if path.startswith("/v1/accounts/"):
            account = self.objects.get(path.rsplit("/", 1)[1])
            if account is None:
                return 404, _error("invalid_request_error", "No such account")
            return 200, account
        if path == "/v1/balance_transactions":
            low = int(params.get("created[gte]", 0))
            high = int(params.get("created[lt]", 2**62))
            rows = [r for r in self.balance_transactions if low <= r["created"] < high]
            rows.reverse()  # newest first, like Stripe
            after = params.get("starting_after")
            if after:
                index = next(i for i, r in enumerate(rows) if r["id"] == after)
                rows = rows[index + 1 :]
            limit = int(params.get("limit", 10))
            page = rows[:limit]
            expand = "data.source" in params.values()
            data = [{**r, "source": self.objects[r["source"]]} if expand else dict(r) for r in page]
            return 200, {
                "object": "list",
                "url": "/v1/balance_transactions",
                "has_more": len(rows) > limit,
                "data": data,
            }
        return 404, _error("invalid_request_error", f"Unrecognized request URL (GET: {path})")


def _error(kind: str, message: str, code: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": kind, "message": message}
    if code:
        error["code"] = code
    return {"error": error}
