"""gitkube: a GitOps container orchestrator."""

__version__ = "0.1.0"
