"""billhub.simulator."""
