"""Figures and the HTML report of a store's results."""

from __future__ import annotations

from actstore.report import _plots
from actstore.report._heatmap import HEATMAP_FORMATS, check_heatmap_path, write_heatmap
from actstore.report._layout import (
    MANY_LAYERS,
    RunGroup,
    RunLayers,
    network_order,
    run_groups,
    run_layers,
)
from actstore.report._plots import *  # noqa: F403
from actstore.report._probe_plots import probe_checkpoints_figure, probe_layers_figure
from actstore.report._report import SECTIONS, Report, default_report_dir, write_report

__all__ = [
    *_plots.__all__,
    "HEATMAP_FORMATS",
    "MANY_LAYERS",
    "SECTIONS",
    "Report",
    "RunGroup",
    "RunLayers",
    "check_heatmap_path",
    "default_report_dir",
    "network_order",
    "probe_checkpoints_figure",
    "probe_layers_figure",
    "run_groups",
    "run_layers",
    "write_heatmap",
    "write_report",
]
