"""Title normalization (e-CLIP §3.2.1): special characters become spaces, so tokens can be counted."""

from __future__ import annotations

import re
import unicodedata

# Letters and digits of any script (Korean included) stay; everything else separates tokens.
_SEPARATORS = re.compile(r"[^\w]+|_+", re.UNICODE)


def normalize_title(title: str) -> str:
    """NFKC, lower case, every non-alphanumeric character replaced by a space, spaces collapsed."""
    text = unicodedata.normalize("NFKC", title).lower()
    return " ".join(_SEPARATORS.sub(" ", text).split())


def title_tokens(normalized: str) -> int:
    return len(normalized.split())
