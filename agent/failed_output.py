"""The output of the last deploy's new container that never went live or was rolled back: Docker forgets it
with the container, so it is kept in the state dir for `zdd logs --failed` until the app's next deploy."""

import os
from pathlib import Path

LINES = 200  # the container's last lines kept: enough for a stack trace, small in the state dir


class FailedOutput:
    def __init__(self, state_dir: Path):
        self.dir = state_dir / "failed"

    def path(self, app: str) -> Path:
        return self.dir / f"{app}.log"

    def keep(self, app: str, text: str) -> None:
        """Replace the app's kept output; empty text forgets it (a new deploy began)."""
        path = self.path(app)
        if not text:
            path.unlink(missing_ok=True)
            return
        self.dir.mkdir(mode=0o750, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(text, encoding="utf-8")
        temporary.chmod(0o640)  # group zdd reads it, as it reads state.toml
        os.replace(temporary, path)

    def read(self, app: str) -> str | None:
        try:
            return self.path(app).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return None
