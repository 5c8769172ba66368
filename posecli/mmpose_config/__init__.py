"""MMPose 0.x config files in and out: a safe reader (never executes them), a mapping to posecli settings, a writer."""

from posecli.mmpose_config.export import settings_to_config_text
from posecli.mmpose_config.parse import load_config
from posecli.mmpose_config.to_settings import ImportResult, config_to_settings

__all__ = ["ImportResult", "config_to_settings", "load_config", "settings_to_config_text"]
