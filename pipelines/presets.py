"""Named presets of a method's hyper-parameters, with config keys that override them.

A method entry in config.yaml names a ``preset`` (``paper``: the published values;
``cpu_budget``: sized for a small CPU run) and may set any of the preset's keys; a key left
null takes the preset's value. A method entry may also carry ``per_dataset`` overrides
(``resolve_params``). Nothing heavy is imported here: the workflow uses it while building the DAG.
"""
from __future__ import annotations

from typing import Any


def resolve_preset(method: str, presets: dict[str, dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """The preset named by ``params["preset"]`` (default ``paper``) with the non-null keys of ``params`` applied."""
    name = params.get("preset", "paper")
    if name not in presets:
        raise ValueError(f"{method}: unknown preset {name!r}; presets: {', '.join(presets)}")
    known = set(presets[name])
    unknown = sorted(set(params) - known - {"preset"})
    if unknown:
        raise ValueError(f"{method}: unknown parameters {unknown}; known: preset, {', '.join(sorted(known))}")
    return {**presets[name], **{k: v for k, v in params.items() if v is not None and k != "preset"}, "preset": name}


def resolve_params(params: dict[str, Any], dataset: str | None) -> dict[str, Any]:
    """A method's parameters with the ``per_dataset`` overrides of ``dataset`` applied."""
    resolved = {k: v for k, v in params.items() if k != "per_dataset"}
    resolved.update((params.get("per_dataset") or {}).get(dataset, {}) if dataset else {})
    return resolved
