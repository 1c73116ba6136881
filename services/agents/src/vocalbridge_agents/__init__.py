"""VocalBridge agents service: agent configurations and their immutable versions."""
