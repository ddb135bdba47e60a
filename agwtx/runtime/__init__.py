"""Per-request machinery every protocol box shares: the error pages, request ids, deadlines and connection limits."""
