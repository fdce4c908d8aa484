"""The step a deploy is at, for `zdd deploy --wait` (and anyone in group zdd): the STATUS line the agent
sends systemd, also kept in a small file of the state dir, rewritten (atomically) when it changes."""

import json
import os
import time
from pathlib import Path


class Progress:
    def __init__(self, state_dir: Path):
        self.path = state_dir / "progress.json"

    def write(self, text: str) -> None:
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        try:
            temporary.write_text(json.dumps({"at": time.time(), "text": text}), encoding="utf-8")
            os.replace(temporary, self.path)
        except OSError:
            pass  # only a display: the deploy must never fail for it

    def read(self) -> str:
        try:
            return str(json.loads(self.path.read_text(encoding="utf-8")).get("text", ""))
        except (OSError, ValueError, AttributeError):
            return ""
