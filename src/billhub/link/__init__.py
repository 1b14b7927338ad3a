"""billhub.link."""
