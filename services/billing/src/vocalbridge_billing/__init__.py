"""VocalBridge billing service: the usage ledger, the price list and usage analytics."""
