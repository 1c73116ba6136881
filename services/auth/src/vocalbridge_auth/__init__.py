"""VocalBridge auth service: tenants, API keys, and the Envoy ext_authz Check."""
