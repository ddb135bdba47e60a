"""Command-line tools: the ARM importer, the health CLI and the demo backends."""
