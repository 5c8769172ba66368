"""Command flows: one module per CLI command, called by posecli.cli with parsed arguments."""
