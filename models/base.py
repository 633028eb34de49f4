"""The method interface: how the pipeline trains and scores a VAD method.

A method declares what it reads (``input_kind``), which supervision it needs, its training
stages in order (possibly none), and the paper protocol of its scores (normalisation,
smoothing, frames it leaves unscored). The pipeline runs one Snakemake job per stage, each
writing a checkpoint, then one scoring job per test video (in a chain, for a method whose scores
carry state from one video to the next). Networks live in their own
modules as pure ``nn.Module``s; a ``Method`` is the thin glue around them.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pipelines.metrics import Protocol
from pipelines.training import StageRun


@dataclass
class VideoScore:
    """Per-frame anomaly scores of one video (higher = more abnormal)."""

    scores: np.ndarray  # float32, one per frame
    scored: np.ndarray  # bool, False where the method gives no score (e.g. the first frames of a clip)
    # bool or None: True where the frame holds nothing to score (a pose method's frame without a
    # person); its score is a placeholder that the evaluation replaces as the method's protocol says
    # (Protocol.empty_frame_fill), since the papers fill from the whole test split.
    empty: np.ndarray | None = None
    # What a method that carries state across a split's videos (``Method.carries_state``) hands to
    # the next video: named arrays, stored in the score file beside the scores.
    state: dict[str, np.ndarray] | None = None

    def __post_init__(self):
        if self.scores.shape != self.scored.shape:
            raise ValueError(f"scores {self.scores.shape} and mask {self.scored.shape} differ in shape")
        if self.empty is not None and self.empty.shape != self.scores.shape:
            raise ValueError(f"scores {self.scores.shape} and empty-frame mask {self.empty.shape} differ in shape")


@dataclass
class EvaluationSet:
    """The evaluation split a stage scores every ``every`` iterations while it trains: the test-set
    model selection the weakly-supervised papers report (there is no validation split)."""

    files: list[Path]  # one input file per evaluation video
    labels: Path  # the split's canonical labels file
    every: int


@dataclass
class TrainInputs:
    """What a training stage reads: one input file per training video, their video labels, and
    optionally an evaluation split to follow during training."""

    files: list[Path]
    video_labels: dict[str, int]
    evaluation: EvaluationSet | None = None

    def sources(self, previous: Path | None = None) -> list[Path]:
        """The files a stage trains from: its inputs and the previous stage's checkpoint, if any."""
        return [*self.files, *([previous] if previous else [])]


class Method(ABC):
    """A method as the pipeline sees it. Subclasses register with ``models.register``."""

    name: ClassVar[str]
    input_kind: ClassVar[str] = "frames"  # "frames" | "features" | "poses"
    supervision: ClassVar[str] = "one_class"  # "one_class" (train split) | "weak" (weak_train split)
    stages: ClassVar[tuple[str, ...]] = ()
    uses_gpu: ClassVar[bool] = False
    #: Config keys that only change how scores are post-processed and evaluated: changing them
    #: reruns the evaluation, not the training or the scoring.
    protocol_params: ClassVar[tuple[str, ...]] = ()
    #: Config keys read only when scoring: changing them reruns the scoring and what follows, not
    #: the training.
    scoring_params: ClassVar[tuple[str, ...]] = ()
    #: Stage -> config key that may name a released checkpoint the stage reads: the workflow makes
    #: the file an input of the stage (checked before anything runs, rerun when it changes).
    released_checkpoint_params: ClassVar[dict[str, str]] = {}
    #: Config keys that change how a job runs, never a number it writes (resume-point intervals,
    #: batch sizes of inference in evaluation mode, cache folders): the workflow passes them to the
    #: jobs as resources, so changing them reruns nothing and leaves the rows' config_hash be.
    runtime_params: ClassVar[tuple[str, ...]] = ()
    #: Stage -> the config keys that stage reads, the ones its saved state (optimisers, random
    #: streams) carries included: a stage gets only these, so a key of a later stage leaves the
    #: earlier ones be. A stage not listed gets every key the training reads.
    stage_params: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(self, params: dict[str, Any], seed: int = 0):
        self.params = params
        self.seed = seed

    @classmethod
    def config_problem(cls, params: dict[str, Any]) -> tuple[str, str] | None:
        """(key, problem) of settings that contradict each other, for one dataset's parameters
        (``per_dataset`` applied), or None. The config check asks before the DAG is built, so a
        contradiction stops the run naming its key instead of failing a job after the expensive
        steps before it; the method's own in-job checks share its rule."""
        return None

    def stage_run(self, out: Path, stage: str, identity: dict[str, Any], config: dict[str, Any], every_steps: int,
                  sources: Sequence[Path] = ()) -> StageRun:
        """The bookkeeping of one of this method's training stages (resume, periodic and final
        checkpoints), under its name and seed, with its ``runtime_params`` left out of what a
        checkpoint records and a resume point must match."""
        return StageRun(out, self.name, stage, identity, config, self.seed, every_steps, sources=sources,
                        runtime_keys=self.runtime_params)

    def train_stage(self, stage: str, inputs: TrainInputs, previous: Path | None, checkpoint_out: Path) -> None:
        """Run one training stage, resuming from ``previous`` (the stage before), writing ``checkpoint_out``."""
        raise NotImplementedError(f"{self.name} has no training stages")

    def carries_state(self) -> bool:
        """True when a video's scores depend on the videos of its split scored before it (LGN-Net's
        test-time memory, as its official evaluation carries it). The workflow then scores the
        split's videos in name order, one job after the other, and such a method's ``score_video``
        takes a third argument: the ``state`` of the previous video's result (None for the first)."""
        return False

    @abstractmethod
    def score_video(self, checkpoint: Path | None, video: Path) -> VideoScore:
        """Score every frame of one video, streaming it (memory must not grow with its length)."""

    @abstractmethod
    def protocol(self, label_convention: str) -> Protocol:
        """The post-processing and evaluation protocol of this method's paper numbers."""
