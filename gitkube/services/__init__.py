"""gitkube.services."""
