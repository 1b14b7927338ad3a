"""billhub.journal."""
