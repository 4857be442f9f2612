"""Finding test secrets in text: test secrets contain the marker ``SECRET``; Basic
credentials are base64, so encoded chunks are decoded and searched too."""

from __future__ import annotations

import base64
import binascii
import re

MARKER = "SECRET"
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]{12,}={0,2}")


def leaks(text: str) -> bool:
    """Whether *text* shows a test secret, in clear or base64."""
    if MARKER in text:
        return True
    for chunk in _BASE64.findall(text):
        try:
            decoded = base64.b64decode(chunk + "=" * (-len(chunk) % 4), altchars=b"-_")
        except (binascii.Error, ValueError):
            continue
        if MARKER.encode() in decoded:
            return True
    return False
