"""Orange Friday: signing."""
