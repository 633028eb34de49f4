"""Synthetic surveillance videos with known anomalies, for demos and tests that must not download data.

A fixed elevated camera watches walkways where articulated COCO-17 pedestrians walk in each walkway's
flow direction; test and abnormal-training videos add running, a car, a cyclist, walking against the flow
or loitering. Each video is rendered with OpenCV, encoded with ffmpeg (H.264), and comes with frame labels
and ground-truth poses in the AlphaPose tracked-person format that STG-NF (Hirschorn & Avidan, ICCV 2023)
reads. Everything is a pure function of the params and the video's split and index.
"""
from __future__ import annotations

from typing import Any

from pipelines.synthetic.params import ANOMALY_TYPES, GENERATOR_VERSION, SPLITS, SyntheticParams, video_names

__all__ = ["ANOMALY_TYPES", "GENERATOR_VERSION", "SPLITS", "SyntheticParams", "video_names", "render_video",
           "write_split_files"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that ``python -m pipelines.synthetic.generate`` does not import its own
    # module twice (once through this package, once as __main__).
    if name in ("render_video", "write_split_files"):
        from pipelines.synthetic import generate

        return getattr(generate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
