"""VocalBridge benchmarks (`make bench`, `python -m bench`): numbers, not pass/fail tests.

See bench/README.md.
"""
