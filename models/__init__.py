"""VAD methods, found by name through a registry.

Each method lives in the module of its own name (``models/<name>.py``) and decorates its
``Method`` subclass with ``@register``; asking for a method imports only its module, so a job
pays for the libraries of the method it runs and no other.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from models.base import EvaluationSet, Method, TrainInputs, VideoScore

_METHODS: dict[str, type[Method]] = {}
_NOT_METHODS = {"base"}

__all__ = ["EvaluationSet", "Method", "TrainInputs", "VideoScore", "register", "method_names", "get_method"]


def register(cls: type[Method]) -> type[Method]:
    _METHODS[cls.name] = cls
    return cls


def _load_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name not in _NOT_METHODS:
            importlib.import_module(f"{__name__}.{module.name}")


def method_names() -> list[str]:
    _load_all()
    return sorted(_METHODS)


def get_method_class(name: str) -> type[Method]:
    if name not in _METHODS and name.isidentifier():
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
    if name not in _METHODS:
        module = Path(__file__).parent / f"{name}.py"
        if module.is_file():
            raise KeyError(f"models/{name}.py registers no method named {name!r}: its Method subclass needs "
                           f"name = {name!r} and the @register decorator")
        raise KeyError(f"unknown method {name!r}; known methods: {', '.join(method_names())}")
    return _METHODS[name]


def get_method(name: str, params: dict, seed: int = 0) -> Method:
    """An instance of method ``name`` with its config parameters."""
    return get_method_class(name)(params, seed)
