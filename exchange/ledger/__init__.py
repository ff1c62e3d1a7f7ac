"""The settlement ledger: double-entry accounts, postings, holds and balances."""
