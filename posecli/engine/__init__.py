"""Engines: the training loop and the evaluation loop."""
