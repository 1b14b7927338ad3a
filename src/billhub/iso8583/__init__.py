"""billhub.iso8583."""
