"""Models: HRNet backbone, heatmap head, top-down model."""

from posecli.models.head import JointsMSELoss, TopdownHeatmapSimpleHead
from posecli.models.hrnet import HRNET_SPECS, HRNet, hrnet_extra
from posecli.models.topdown import TopDown, build_model, count_parameters

__all__ = [
    "HRNET_SPECS",
    "HRNet",
    "JointsMSELoss",
    "TopDown",
    "TopdownHeatmapSimpleHead",
    "build_model",
    "count_parameters",
    "hrnet_extra",
]
