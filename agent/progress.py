"""The step a deploy is at, for `zdd deploy --wait` (and anyone in group zdd): the STATUS line the agent
sends systemd, also kept in a small file of the state dir, rewritten (atomically) when it changes."""

import json
import time
from pathlib import Path

from .state import write_atomically


class Progress:
    def __init__(self, state_dir: Path):
        self.path = state_dir / "progress.json"

    def write(self, text: str) -> None:
        try:  # 0640, the state dir's group: deployers in group zdd read it, as they read state.toml
            write_atomically(self.path, json.dumps({"at": time.time(), "text": text}).encode())
        except OSError:
            pass  # only a display: the deploy must never fail for it

    def read(self, since: float = 0.0) -> str:
        """The step, if it was written at `since` or later (an earlier deploy's last step is not this one's)."""
        try:
            progress = json.loads(self.path.read_text(encoding="utf-8"))
            return str(progress["text"]) if float(progress["at"]) >= since else ""
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return ""
