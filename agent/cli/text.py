"""Text from skills and packs, made safe to print on a terminal through rich.

A skill's description, tags and revision records, and a pack's manifest, come from whoever made the archive: printed
as they are, an ESC sequence could rewrite the terminal (colours, titles, hidden text, OSC 8 links) and rich would
read `[bold]` or `[link=...]` in them as its own markup. Every CLI command that prints such text passes it through
`terminal_text` first (the `--json` outputs need nothing: JSON escapes control characters itself).
"""

from __future__ import annotations

import unicodedata

from rich.markup import escape

# Invisible characters that reorder the text around them ("Trojan source"): shown escaped like control characters.
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _visible(char: str) -> str:
    if char in "\n\t" or (unicodedata.category(char) != "Cc" and char not in _BIDI_CONTROLS):
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_text(value: object) -> str:
    """`value` as inert text for `console.print` or a rich table cell: control characters (ESC, carriage return,
    C1 codes, bidi overrides; not newline or tab) shown as `\\x1b`-style escapes, rich markup escaped."""
    return escape("".join(_visible(char) for char in str(value)))
