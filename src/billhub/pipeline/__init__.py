"""billhub.pipeline."""
