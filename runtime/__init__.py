"""runtime: an async agent runtime whose state cache and sessions live in a KV store."""
