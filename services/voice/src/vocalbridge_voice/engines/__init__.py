"""Speech engines behind one interface, and the worker processes that run them."""
