"""The engine runner: the single writer of each market's book (see ``core``)."""
