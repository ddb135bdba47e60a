"""Proxying to backends: the reverse-proxy answer, the backend HTTP client and the backend pools."""
