"""Attributes of the pipeline's HDF5 files: nested values (dicts, lists) are stored as JSON text
and read back as Python values, so every file keeps its provenance in one readable form."""
from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np


def _plain(value: Any) -> Any:
    # Attributes read back from another file (a frames file's, say) hold numpy scalars and arrays.
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in an attribute")


def encode(value: Any) -> Any:
    """What an attribute holds: scalars, strings and arrays as they are, anything nested as JSON."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=_plain)
    return value


def decode(value: Any) -> Any:
    """An attribute as a Python value: JSON text parsed (text that only looks like JSON is kept
    as it is), bytes as text, numpy scalars as Python numbers."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, np.generic):
        return value.item()
    return value


def write(attrs: Any, values: Mapping[str, Any]) -> None:
    """Set ``values`` on an h5py attribute manager (a file's, a dataset's), encoded."""
    for key, value in values.items():
        attrs[key] = encode(value)


def read(attrs: Any) -> dict[str, Any]:
    """Every attribute of an h5py attribute manager, decoded."""
    return {key: decode(value) for key, value in attrs.items()}
