"""VocalBridge conversation service: turns, reliable delivery to providers, streaming."""
