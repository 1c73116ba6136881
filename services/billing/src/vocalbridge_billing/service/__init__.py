"""Billing use cases, one module per job: the ledger (RecordUsage), analytics (usage
summary, provider performance, usage events) and prices. Each opens its own transactions
and returns domain values."""
