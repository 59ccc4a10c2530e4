"""Who may call what: risk tiers, principals, policy decisions and the audit log."""
