"""billhub.observability."""
