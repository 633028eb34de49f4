"""Where a dataset's skeletons come from, in one phrase for the report rows of the pose methods.

The numbers of STG-NF and GENet depend on the skeletons more than on anything else (tracker IDs
change them: STG-NF issue #12), and the papers used the AlphaPose package released with STG-NF.
The workflow writes this phrase into the method's config entry (key ``pose_source``, per dataset),
so that it is part of the row's config hash and of its protocol, as the feature methods do with
their features. Light on imports: the workflow calls it while it builds the DAG.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

POSE_SOURCE_KEY = "pose_source"
NOT_RECORDED = "skeletons not recorded (run outside the workflow)"

# Settings that say where a file lives, not what the skeletons are.
_LOCATION_KEYS = {"cache_dir", "checkout"}


def backend_of(poses: Mapping[str, Any], dataset: str) -> str:
    """The backend that makes a dataset's skeletons under a config's ``poses`` section: ``precomputed``
    where it names the dataset's folder, else the dataset's ``dataset_backends`` entry, else ``backend``."""
    if dataset in poses["precomputed"]:
        return "precomputed"
    return poses["dataset_backends"].get(dataset, poses["backend"])


def settings_digest(settings: Mapping[str, Any]) -> str:
    """Short sha256 of a backend's settings (locations left out), so two rows whose skeletons came
    from differently configured extractions never share a description or a config hash."""
    kept = {k: v for k, v in settings.items() if k not in _LOCATION_KEYS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:12]


def describe_pose_source(
    backend: str, settings: Mapping[str, Any] | None = None, precomputed_dir: str | None = None,
    random_tube_backbone: bool = False,
) -> str:
    """One phrase for a report row, ending in NOT COMPARABLE and the reasons where that applies.

    ``settings`` are the backend's section of the ``poses`` config (alphapose or blazepose);
    ``random_tube_backbone`` marks GENet's person tubes taken with a random-init I3D.
    """
    settings = settings or {}
    reasons: list[str] = []
    if backend == "precomputed":
        text = f"skeletons precomputed: AlphaPose JSON from {precomputed_dir} (the papers used STG-NF's released package)"
    elif backend == "alphapose":
        text = (f"skeletons extracted here with AlphaPose ({settings.get('detector')}, {settings.get('tracker')}; "
                f"settings {settings_digest(settings)})")
        reasons.append("re-extracted AlphaPose track IDs differ from STG-NF's released package, which changes "
                       "the numbers (STG-NF issue #12)")
    elif backend == "blazepose":
        text = f"skeletons extracted here with BlazePose lite on CPU (settings {settings_digest(settings)})"
        reasons.append("BlazePose skeletons, not the papers' AlphaPose ones")
    elif backend == "ground_truth":
        text = "skeletons: the synthetic set's rendered ground truth"
    else:
        raise ValueError(f"unknown pose backend {backend!r}")
    if random_tube_backbone:
        reasons.append("person tubes from a random-init I3D (allow_random_backbone), not Kinetics weights")
    if reasons:
        text += "; NOT COMPARABLE to the paper: " + "; ".join(reasons)
    return text
