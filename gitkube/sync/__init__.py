"""gitkube.sync."""
