"""SQLite fixtures (filled in by the SQLite backend work)."""
