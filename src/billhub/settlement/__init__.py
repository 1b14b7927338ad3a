"""billhub.settlement."""
