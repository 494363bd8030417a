"""gitkube.nodes."""
