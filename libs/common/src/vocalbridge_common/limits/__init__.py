"""Rate limits and spend budgets: the values (model), the counters (store, in Redis or in
process), the limiter the enforcing services call, and how a service reads a tenant's
limits and a window's spend (clients)."""
