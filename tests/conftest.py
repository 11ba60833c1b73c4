import os

# Tests must not grab every core or preallocate: CI has 2 cores and runs tests in one process.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
