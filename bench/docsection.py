"""Write benchmark output into a marked section of a hand-written doc.

The doc keeps its prose; the script owns the text between ``<!-- bench:NAME -->`` and
``<!-- /bench:NAME -->`` (appended at the end when the markers are missing), so figures are never
typed by hand and always sit next to the command that produced them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence


def write_section(path: str | Path, name: str, body: str) -> None:
    path = Path(path)
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = path.read_text() if path.exists() else ""
    block = f"{begin}\n{body.strip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
