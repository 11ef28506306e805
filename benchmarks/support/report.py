"""Writing a benchmark's result: the markdown table and the raw figures side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_report(folder: Path, stem: str, text: str, results: Any) -> None:
    """`folder/stem.md` (the table, also printed) and `folder/stem.json` (the figures it was made from)."""
    (folder / f"{stem}.md").write_text(text)
    (folder / f"{stem}.json").write_text(json.dumps(results, indent=1))
    print(text)
