"""GENet in the pipeline: STG-NF guidance, then exploration on person-tube I3D features.

Yang et al., "Multilevel Guidance-Exploration Network and Behavior-Scene Matching Method for Human
Behavior Anomaly Detection", ACM MM 2024. Two training stages, as two Snakemake jobs:

* ``guidance``: the STG-NF flow (Hirschorn & Avidan, ICCV 2023) trained on the training split's pose
  segments with the STG-NF recipe, or a released STG-NF checkpoint (``guidance_pretrained``; GENet's
  own teacher files are byte-identical to STG-NF's releases);
* ``exploration``: the flow frozen, the 3D CNN of ``models.genet_net`` trained to regress its latent z
  from the segment's person-tube features (Adamax 5e-4, x0.99 per epoch, batch 256, 10 epochs, clip 100).

A segment's normality is -MSE(z, student output); frames are scored with STG-NF's protocol (centre frame,
most abnormal person, frames where no window is centred (nobody there, or the first and last L/2 frames
of a track) given the test split's maximum normality, Gaussian passes sigma 1..6, micro AUC).

Left out of the paper (single-level variant, like the public code): the second level, where the RGB
encoder guides a mask encoder on masked frames (appearance), and the Behavior-Scene Matching Module.
Neither is in the authors' code and the paper's description of them could not be checked, so they are
not guessed at. Also unlike the public code: every clip is used, sorted (its loader kept 16 files of an
unsorted listing), and by default the student is not trained on mirrored poses paired with unmirrored
features (the published loader does that to half of its 2N pairs); it sees each segment once per epoch.
``mirrored_pairs: true`` trains on the public loader's 2N pairs (twice the steps per epoch), the mirrored
half with x negated and the joints left in their places, as that loader does.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from models import register
from models.base import Method, TrainInputs, VideoScore
from models.genet_net import ExplorationNet, GuidedExploration
from models.stg_nf import (
    STGNFTrainingConfig,
    fit_flow,
    flow_from_params,
    flow_identity,
    load_released_flow,
    pose_protocol,
    segment_nll,
    training_schedule,
)
from pipelines.features.registry import REGISTRY
from pipelines.metrics import Protocol
from pipelines.poses.segment_data import dataset_of, frame_anomaly_scores
from pipelines.poses.segments import hflip, model_input
from pipelines.poses.source import POSE_SOURCE_KEY
from pipelines.poses.tubes import BACKBONE, Tubes, read_tubes, tube_weights
from pipelines.presets import resolve_params
from pipelines.training import check_finite, load_checkpoint, torch_device

_SCORING_BATCH = 64
# What the flow is built from: both stages read them (the exploration's teacher is the guidance flow).
_FLOW_KEYS = ("seg_len", "frame_size", "num_steps", "prior_mean", "max_hop")


class TubeSet:
    """The segments of several tubes files: normalised poses in memory, features read per batch."""

    def __init__(self, tubes: list[Tubes], frame_size: tuple[int, int]):
        self.tubes = tubes
        self.frame_size = frame_size
        self.file_index = np.concatenate([np.full(len(t.track_ids), i) for i, t in enumerate(tubes)] or [[]]).astype(int)
        self.row_index = np.concatenate([np.arange(len(t.track_ids)) for t in tubes] or [[]]).astype(int)
        self.raw_poses = np.concatenate([t.poses for t in tubes]) if tubes else np.zeros((0, 3, 1, 18))

    def __len__(self) -> int:
        return int(self.file_index.size)

    def pose_input(self, index: np.ndarray, flipped: np.ndarray) -> np.ndarray:
        poses = self.raw_poses[index].astype(np.float64)
        if flipped.any():
            # x -> -x only, as the public loader: the teacher's latent (the student's target) lists
            # the joints in their order, so swapping left and right would change the target
            poses[flipped] = hflip(poses[flipped], swap_left_right=False)
        return model_input(poses, self.frame_size)

    def unflipped_input(self, index: np.ndarray) -> np.ndarray:
        return self.pose_input(index, np.zeros(index.size, bool))

    def features(self, index: np.ndarray) -> np.ndarray:
        """(B, 1024, T', 3, 3) float32 feature maps of the segments ``index``, read from their files."""
        files = self.file_index[index]
        result = np.empty((index.size, *self.tubes[0].feature_shape), np.float32)
        for number in np.unique(files):
            result[files == number] = self.tubes[number].features(self.row_index[index[files == number]])
        return result


def exploration_identity(params: dict[str, Any]) -> dict[str, Any]:
    return flow_identity(params) | {"feature_shape": [1024, int(params["seg_len"]) // 8, 3, 3]}


@torch.no_grad()
def segment_normality(model: GuidedExploration, n: int, poses: Callable[[np.ndarray], np.ndarray],
                      features: Callable[[np.ndarray], np.ndarray], device: str) -> np.ndarray:
    model.to(device).eval()
    values = []
    for start in range(0, n, _SCORING_BATCH):
        index = np.arange(start, min(start + _SCORING_BATCH, n))
        values.append(model.normality(torch.from_numpy(poses(index)).to(device),
                                      torch.from_numpy(features(index)).to(device)).double().cpu().numpy())
    return np.concatenate(values) if values else np.zeros(0)


@register
class GENetMethod(Method):
    """GENet level 1 (see the module docstring); input: person-tube files (pipelines.poses.tubes)."""

    name = "genet"
    input_kind = "person_tubes"
    supervision = "one_class"
    stages = ("guidance", "exploration")
    uses_gpu = True
    protocol_params = ("smoothing_sigmas", POSE_SOURCE_KEY)
    scoring_params = ("test_stride",)
    released_checkpoint_params = {"guidance": "guidance_pretrained"}
    # I3D runs in evaluation mode, segment by segment; the cache folder only says where the weights
    # file may be, and the workflow makes that file the tubes' input (pipelines.poses.tubes.tube_weights).
    runtime_params = ("checkpoint_every_steps", "tube_batch_size", "i3d_cache_dir")
    stage_params = {
        "guidance": (*_FLOW_KEYS, "flip_augmentation", "guidance_pretrained", "guidance_preset", "guidance_epochs",
                     "guidance_batch_size", "guidance_max_train_segments"),
        "exploration": (*_FLOW_KEYS, "epochs", "batch_size", "lr", "lr_decay", "mirrored_pairs"),
    }

    @classmethod
    def config_problem(cls, params: dict[str, Any]) -> tuple[str, str] | None:
        if params.get("allow_random_backbone") or tube_weights(params):
            return None
        cache = params.get("i3d_cache_dir")
        return "i3d_weights", (
            f"not set{f', and {cache} holds no rgb_imagenet.pt' if cache else ''}: the person tubes need the "
            f"Kinetics RGB I3D weights ({REGISTRY[BACKBONE].url}); name the file here or put it in i3d_cache_dir, "
            "or set allow_random_backbone: true for a test run whose rows are marked not comparable")

    def resolved(self, files: list[Path]) -> dict[str, Any]:
        params = resolve_params(self.params, dataset_of(files))
        if int(params["seg_len"]) % 8:
            raise ValueError(f"genet: seg_len {params['seg_len']} must be a multiple of 8 (I3D's temporal stride)")
        return params

    def train_stage(self, stage: str, inputs: TrainInputs, previous: Path | None, checkpoint_out: Path) -> None:
        params = self.resolved(inputs.files)
        tubes = TubeSet([read_tubes(p) for p in inputs.files], tuple(params["frame_size"]))
        if len(tubes) == 0:
            raise ValueError("genet: no training segments in the person-tube files")
        if stage == "guidance":
            self._guidance(params, tubes, checkpoint_out, inputs.sources())
        elif stage == "exploration":
            if previous is None:
                raise ValueError("genet exploration needs the guidance checkpoint (--previous)")
            self._exploration(params, tubes, previous, checkpoint_out, inputs.sources(previous))
        else:
            raise ValueError(f"genet has no stage {stage!r}; stages: {self.stages}")

    def _guidance(self, params: dict[str, Any], tubes: TubeSet, out: Path, sources: list[Path]) -> None:
        flow_params = params | {"preset": params["guidance_preset"], "epochs": params["guidance_epochs"],
                                "batch_size": params["guidance_batch_size"],
                                "max_train_segments": params["guidance_max_train_segments"]}
        run = self.stage_run(out, "guidance", flow_identity(params), params, int(params["checkpoint_every_steps"]),
                             sources)
        extra: dict[str, Any] = {"n_train_segments": len(tubes)}
        if params.get("guidance_pretrained"):
            model, extra["pretrained_sha256"] = load_released_flow(params["guidance_pretrained"], params,
                                                                  "guidance_pretrained")
            optimizers = {}
        else:
            model = flow_from_params(params)
            config, max_segments = training_schedule(flow_params)
            used, optimizer = fit_flow(model, len(tubes), tubes.pose_input, config, max_segments, run, torch_device())
            extra["n_segments_used"] = used
            optimizers = {"adamax": optimizer}
        nll = segment_nll(model, len(tubes), tubes.pose_input, torch_device())
        extra["guidance_mean_nll"] = float(nll.mean())
        run.finish(model.cpu(), optimizers, extra)

    def _exploration(self, params: dict[str, Any], tubes: TubeSet, previous: Path, out: Path, sources: list[Path]) -> None:
        guidance = load_checkpoint(previous, self.name, flow_identity(params))
        teacher = flow_from_params(params)
        teacher.load_state_dict(guidance["model"])
        run = self.stage_run(out, "exploration", exploration_identity(params), params,
                             int(params["checkpoint_every_steps"]), sources)
        model = GuidedExploration(teacher, ExplorationNet())
        config = STGNFTrainingConfig(epochs=int(params["epochs"]), batch_size=int(params["batch_size"]),
                                     lr=float(params["lr"]), lr_decay=float(params["lr_decay"]))
        device = torch_device()
        model.to(device)
        optimizer = config.make_optimizer(model.student.parameters())
        start = run.resume(model, {"adamax": optimizer})
        model.train()
        # mirrored_pairs: the public loader's 2N pairs, the second N mirrored poses beside the unmirrored
        # features of the same segment; otherwise each segment once, as it was seen.
        pairs = len(tubes) * (2 if params.get("mirrored_pairs", False) else 1)
        per_epoch = math.ceil(pairs / config.batch_size)
        for step in range(start, config.epochs * per_epoch):
            epoch, batch = divmod(step, per_epoch)
            order = np.random.default_rng([self.seed, 3, epoch]).permutation(pairs)
            picked = order[batch * config.batch_size : (batch + 1) * config.batch_size]
            index, mirrored = picked % len(tubes), picked >= len(tubes)
            for group in optimizer.param_groups:
                group["lr"] = config.lr_for_epoch(epoch)
            target, output = model(torch.from_numpy(tubes.pose_input(index, mirrored)).to(device),
                                   torch.from_numpy(tubes.features(index)).to(device))
            loss = ((target - output) ** 2).mean()
            check_finite(loss, f"GENet exploration, epoch {epoch}, batch {batch}")
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.student.parameters(), config.grad_clip_norm)
            optimizer.step()
            run.advance(model, {"adamax": optimizer})
        normality = segment_normality(model, len(tubes), tubes.unflipped_input, tubes.features, device)
        run.finish(model.cpu(), {"adamax": optimizer}, {
            "n_train_segments": len(tubes),
            "train_mean_normality": float(normality.mean()),
            "backbone_weights": sorted({str(t.attrs.get("backbone_weights")) for t in tubes.tubes}),
        })

    def score_video(self, checkpoint: Path | None, video: Path) -> VideoScore:
        if checkpoint is None:
            raise ValueError("genet scores with a trained checkpoint; none was given")
        params = self.resolved([video])
        payload = load_checkpoint(checkpoint, self.name, exploration_identity(params))
        model = GuidedExploration(flow_from_params(params), ExplorationNet())
        model.load_state_dict(payload["model"])
        tubes = read_tubes(video)
        segments = TubeSet([tubes], tuple(params["frame_size"]))
        normality = segment_normality(model, len(segments), segments.unflipped_input, segments.features, torch_device())
        scores, empty = frame_anomaly_scores(tubes.n_frames, tubes.track_ids, tubes.start_frames, normality,
                                             int(params["seg_len"]))
        return VideoScore(scores, np.ones(scores.size, bool), empty)

    def protocol(self, label_convention: str) -> Protocol:
        return pose_protocol(self.params, label_convention)
