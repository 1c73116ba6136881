"""The baseline of the send_message benchmark: a trivial gRPC echo service behind Envoy."""
