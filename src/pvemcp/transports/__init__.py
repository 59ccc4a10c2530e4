"""How callers reach the gateway: stdio now, HTTP later; all into the same `invoke`."""
