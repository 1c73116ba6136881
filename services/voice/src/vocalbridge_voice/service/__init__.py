"""The voice use cases: a spoken turn, a stream of them, and the standalone engines."""
