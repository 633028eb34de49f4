"""Dataset adapters, found by name through a registry so the pipeline never lists them by hand.

Each dataset's adapter lives in the module of its own name (``pipelines/datasets/<name>.py``)
and decorates its class with ``@register``; asking for a dataset imports only its module.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from pipelines.datasets.base import DatasetAdapter, DatasetError, LabelError, Video

_ADAPTERS: dict[str, type[DatasetAdapter]] = {}

__all__ = ["DatasetAdapter", "DatasetError", "LabelError", "Video", "register", "adapter_names", "get_adapter"]


def register(cls: type[DatasetAdapter]) -> type[DatasetAdapter]:
    _ADAPTERS[cls.name] = cls
    return cls


def adapter_names() -> list[str]:
    """Names of the datasets that have an adapter module."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base")


def get_adapter(name: str, config: dict[str, Any]) -> DatasetAdapter:
    """The adapter of dataset ``name`` configured with its config entry."""
    if name not in _ADAPTERS and name in adapter_names():
        importlib.import_module(f"{__name__}.{name}")
    if name not in _ADAPTERS:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(adapter_names())}")
    return _ADAPTERS[name](config)
