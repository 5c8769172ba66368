"""posecli: fine-tune and evaluate top-down heatmap pose estimators with MMPose-compatible numbers."""

__version__ = "0.1.0"
