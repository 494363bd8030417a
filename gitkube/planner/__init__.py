"""gitkube.planner."""
