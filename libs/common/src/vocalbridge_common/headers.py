"""Header (gRPC metadata) names that more than one component must agree on:
the services, the Envoy edge configuration and the clients' documentation."""

from __future__ import annotations

# The signed identity claims auth.Check adds; Envoy strips any client-sent copy.
IDENTITY_HEADER = "x-vb-identity"
# Envoy's request id, carried to every service and into every log line.
REQUEST_ID_HEADER = "x-request-id"
# The client's idempotency key (HTTP `Idempotency-Key`; header names are case-insensitive).
IDEMPOTENCY_KEY_HEADER = "idempotency-key"
# On a response that replays a stored one.
IDEMPOTENT_REPLAYED_HEADER = "idempotent-replayed"
# Where an API key may arrive.
AUTHORIZATION_HEADER = "authorization"
API_KEY_HEADER = "x-api-key"
# The OpenAI-compatible API (vocalbridge.openai.v1): the VocalBridge session a chat completion
# belongs to, when the client wants the history kept server-side (absent: stateless).
SESSION_HEADER = "vocalbridge-session"
# The OpenAI-shaped error JSON of a refused OpenAI-compatible request (gRPC trailer, or a header of
# auth.Check's denial); the edge moves it into the response body and never passes it on.
OPENAI_ERROR_HEADER = "x-vb-openai-error"
# OpenAI's SDKs obey it: "false" where retrying the same request cannot help.
SHOULD_RETRY_HEADER = "x-should-retry"
# What Envoy sends on its ext_authz calls to auth.Check (gRPC metadata, never a client's header):
# the shared edge secret, from the environment variable of that name in Envoy's and auth's
# processes. Check answers no one else, so a bare auth port mints no identities.
EDGE_SECRET_HEADER = "x-vb-edge-secret"
EDGE_SECRET_ENV = "VB_EDGE_SECRET"
# What a client's request headers may be in all (names and values, the pseudo-headers included)
# and how many: auth.Check refuses more with 431 REQUEST_HEADERS_TOO_LARGE, over either HTTP
# version and with a status a gRPC client can read. Every service accepts several times this as
# gRPC metadata (vocalbridge_common.server), so a request within it never meets a service's own
# limit. Envoy's codec limits are above these (vocalbridge_edge), for what Check never sees.
MAX_REQUEST_HEADER_BYTES = 16 * 1024
MAX_REQUEST_HEADER_COUNT = 100
