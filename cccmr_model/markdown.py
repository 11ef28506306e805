"""Text from outside (site names, which a site or an administrator chose) made inert in Markdown and HTML."""

from __future__ import annotations

import re

# Characters that start HTML, links, images, code spans or emphasis, or end a table cell.
_SPECIAL = re.compile(r"([\\`*\[\]<>&|])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def escape_markdown(text: object) -> str:
    """`text` as literal Markdown: markup characters backslash-escaped, line breaks and control characters as one
    space. CommonMark (and `cccmr_model.demo.report.markdown_to_html`) render the escapes as the characters."""
    return _SPECIAL.sub(r"\\\1", _CONTROL.sub(" ", str(text)))
