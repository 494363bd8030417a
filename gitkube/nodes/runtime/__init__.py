"""gitkube.nodes.runtime."""
