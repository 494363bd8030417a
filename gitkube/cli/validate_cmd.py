"""`gitkube validate` (filled in by the validation work)."""
