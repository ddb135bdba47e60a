"""Routing: listener and rule matching, path maps, redirects, rewrites, affinity and routing plugins."""
