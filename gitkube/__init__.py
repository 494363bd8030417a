"""gitkube: a GitOps container orchestrator."""

__version__ = "0.1.0"

from gitkube.api.redact import install_log_redaction

# secret values never reach a log line, whatever logs it (gitkube.api.redact)
install_log_redaction()
