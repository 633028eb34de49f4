"""Temporal-difference energy: a classical, training-free reference baseline.

The anomaly score of frame t is the mean absolute difference between frames t and t-1 over
all pixels and channels: fast or sudden motion (running, vehicles) raises it. The first
frame has no predecessor and is left unscored. Cheap and honest: a learned method that does
not beat it on a dataset is not learning much there.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from models import register
from models.base import Method, VideoScore
from pipelines.metrics import Protocol


@register
class TemporalDifferenceEnergy(Method):
    name = "tde"
    input_kind = "frames"
    stages = ()
    protocol_params = ("normalisation", "smoothing_sigmas")

    def score_video(self, checkpoint: Path | None, video: Path) -> VideoScore:
        from pipelines.frame_store import FrameReader  # h5py and Blosc: not while the workflow builds its DAG

        with FrameReader(video) as reader:
            scores = np.zeros(len(reader), np.float32)
            previous = None
            for start, block in reader.blocks():
                block = block.astype(np.float32)
                frames = block if previous is None else np.concatenate([previous, block])
                energy = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
                offset = 1 if previous is None else 0
                scores[start + offset : start + block.shape[0]] = energy
                previous = block[-1:]
        scored = np.ones(len(scores), bool)
        scored[0] = False
        return VideoScore(scores, scored)

    def protocol(self, label_convention: str) -> Protocol:
        return Protocol(
            pooling="micro",
            normalisation=self.params.get("normalisation", "none"),
            smoothing_sigmas=tuple(self.params.get("smoothing_sigmas", ())),
            label_convention=label_convention,
            skipped_start_frames=1,
        )
