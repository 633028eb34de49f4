"""Feature sets: a clip preset, optionally with a patch preset, under one name (e.g. `rtfm`, `rtfm+ssrl_patches`).

Plain data, read by the workflow while it builds the DAG.
"""
from __future__ import annotations

from pipelines.features.presets import PRESETS, ClipPreset, PatchPreset
from pipelines.features.store import feature_set_name

CLIP_PRESETS = tuple(name for name, preset in PRESETS.items() if isinstance(preset, ClipPreset))
PATCH_PRESETS = tuple(name for name, preset in PRESETS.items() if isinstance(preset, PatchPreset))
FEATURE_SETS: dict[str, tuple[str, str | None]] = {
    feature_set_name(clip, patches): (clip, patches)
    for clip in CLIP_PRESETS
    for patches in (None, *PATCH_PRESETS)
}


def parse_feature_set(name: str) -> tuple[ClipPreset, PatchPreset | None]:
    """The presets a feature set is made of."""
    if name not in FEATURE_SETS:
        raise KeyError(f"unknown feature set {name!r}; known: {', '.join(sorted(FEATURE_SETS))}")
    clip, patches = FEATURE_SETS[name]
    return PRESETS[clip], (PRESETS[patches] if patches else None)


def backbones_needed(name: str, published_clip: bool = False, flow: bool = False) -> list[str]:
    """Registry names of the backbones whose weights extracting a feature set needs: the flow backbone only
    with ``flow`` (features.flow) and a preset that has one; with published clip features only the patch
    backbone."""
    clip, patches = parse_feature_set(name)
    needed = [] if published_clip else [clip.rgb_backbone]
    if flow and clip.flow_backbone and not published_clip:
        needed.append(clip.flow_backbone)
    return sorted(set(needed + ([patches.backbone] if patches else [])))


def missing_streams(name: str, flow: bool = False) -> tuple[str, ...]:
    """Streams a feature set's preset asks for that its features lack: the flow stream unless ``flow``."""
    return ("flow",) if parse_feature_set(name)[0].flow_backbone and not flow else ()
