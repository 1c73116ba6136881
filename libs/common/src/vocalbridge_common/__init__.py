"""Shared runtime of the VocalBridge services."""
