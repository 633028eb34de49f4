"""JSON that strict parsers read: a number that does not exist is written null, never NaN.

Python's ``json`` writes NaN and Infinity, which are not JSON: jq and other strict readers refuse the
whole file. A macro AUC with no two-class video, or a false alarm rate without a normal video, is
written null instead, and the readers here take null back as NaN.
"""
from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """``value`` with every non-finite float, however deeply nested, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def dumps(value: Any, **options: Any) -> str:
    """JSON text of ``value``, non-finite floats as null (``json.dumps`` options passed on)."""
    return json.dumps(finite(value), allow_nan=False, **options)
