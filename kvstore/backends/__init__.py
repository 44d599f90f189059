"""Storage backends, one per module; each imports its driver lazily."""
