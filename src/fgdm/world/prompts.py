"""Reading prompt files: one prompt per line, or the MultiGen JSON list format."""

from __future__ import annotations

import json
from pathlib import Path


def read_prompts(path: str | Path, arg: str = "prompts") -> list[str]:
    """Prompts from a text file (one per line; blank lines and ``#`` comments skipped) or a JSON
    list (MultiGen entries with a ``text`` field, or plain strings).

    Raises ValueError naming ``arg`` and the path for unreadable, malformed or empty files.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise ValueError(f"{arg} file {str(path)!r} cannot be read: {why}") from None
    if p.suffix.lower() == ".json" or text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{arg} file {str(path)!r} is not valid JSON: {e.msg} (line {e.lineno})") from None
        if not isinstance(data, list):
            raise ValueError(f"{arg} file {str(path)!r} must hold a JSON list of prompts")
        prompts = []
        for i, entry in enumerate(data):
            if isinstance(entry, str):
                prompts.append(entry)
            elif isinstance(entry, dict) and isinstance(entry.get("text"), str):
                prompts.append(entry["text"])
            else:
                raise ValueError(f"{arg} file {str(path)!r}: entry {i} is neither a string nor an object with 'text'")
    else:
        prompts = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not prompts:
        raise ValueError(f"{arg} file {str(path)!r} holds no prompts")
    return prompts
