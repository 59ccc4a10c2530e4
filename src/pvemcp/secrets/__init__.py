"""Credentials for the clusters, and the redaction set every loaded secret joins."""
