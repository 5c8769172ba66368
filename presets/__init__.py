"""Shipped presets (YAML files in this folder), installed as the ``posecli.presets`` package."""
