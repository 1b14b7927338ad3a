"""billhub.transport."""
