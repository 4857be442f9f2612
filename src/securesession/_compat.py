"""Typing names newer than the oldest Python securesession supports (3.10)."""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    from typing import Unpack, dataclass_transform
else:
    from typing_extensions import Unpack, dataclass_transform

__all__ = ["Unpack", "dataclass_transform"]
