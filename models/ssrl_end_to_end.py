"""SSRL end to end: the ablation the specification asks to keep beside the staged schedule.

The same network as the last stage of ``models/ssrl.py`` (RTFM's clip branch and all three patch
scales) trained in one stage from scratch, every unit at once, nothing loaded or frozen: what the
initial release of the SSRL code did (its stage 2 trained every scale together). Features, losses,
batches, optimiser and scoring are SSRL's; only the schedule differs, so its row sits beside
``ssrl``'s and says which it is. No paper number belongs to it.
"""
from __future__ import annotations

import dataclasses

from models import register
from models.ssrl import CLASSIFIER_UNIT, PATCH_GRIDS, SSRL, SSRL_STAGES, TEMPORAL_UNIT, patch_unit
from pipelines.metrics import Protocol
from pipelines.weak_methods import protocol

#: The full network, every unit trained together.
END_TO_END = dataclasses.replace(
    SSRL_STAGES[-1],
    trainable=(TEMPORAL_UNIT, CLASSIFIER_UNIT, *(patch_unit(i) for i in range(len(PATCH_GRIDS)))),
    frozen=(),
    loads_stage=None,
)


@register
class SSRLEndToEnd(SSRL):
    """SSRL's network at all scales trained in one stage (no staged freezing)."""

    name = "ssrl_end_to_end"
    stages = ("train",)
    schedules = (END_TO_END,)

    @property
    def stage_init(self) -> str:
        return "last"  # nothing to start from: one stage

    def protocol(self, label_convention: str) -> Protocol:
        text = (f"{label_convention}; end-to-end ablation: the clip branch and all {len(PATCH_GRIDS)} patch scales "
                "trained together from scratch in one stage, nothing frozen (the initial release of the code)")
        return protocol(self.params, text)
