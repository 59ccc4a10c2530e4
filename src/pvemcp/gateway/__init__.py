"""The single pipeline every tool call goes through: validate, decide, audit, run, redact."""
