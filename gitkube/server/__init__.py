"""The HTTP server: webhooks, metrics, health and the status API."""
