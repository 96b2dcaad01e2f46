"""Orange Friday: hardware."""
