"""Orange Friday: server."""
