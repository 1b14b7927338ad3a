"""billhub.connectors."""
