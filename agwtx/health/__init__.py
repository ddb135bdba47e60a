"""Backend health: probes and the health states they set."""
