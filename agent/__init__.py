"""Orange Friday: agent."""
