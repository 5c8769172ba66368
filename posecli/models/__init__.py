"""Models: HRNet backbone, heatmap head, top-down model."""
