"""Delivery: bought tokens consumed through an OpenAI-compatible gateway.

- ``endpoints`` — providers' OpenAI-compatible upstreams per market (encrypted keys), health
  probes, public per-provider statistics and the dead-man switch.
- ``escrow`` — lots (what a buyer holds, from which provider, at which price, until when),
  reservations against them, escrow release to providers, take-or-pay expiry and SLA credits.
  Money moves only through ``exchange.ledger.services``.
- ``gateway`` — ``/v1/chat/completions`` and ``/v1/models``: routing, reserve, stream through,
  meter, settle; generation records.
"""
