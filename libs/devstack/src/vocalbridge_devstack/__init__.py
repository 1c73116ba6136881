"""The local stack runner: every service and Envoy as supervised child processes."""
