"""The runtime: config (data), weights as layers (``linear``), state (``kv_cache``), and the
forward pass: ``model`` (the layer in NumPy, prefill in batches) and ``decode`` (one compiled
call per generated token)."""
