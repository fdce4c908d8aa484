"""How far a pull is, in bytes, from the messages Docker streams while it pulls an image.

Docker reports each layer on its own: "Downloading" with {current, total}, then "Download complete",
"Extracting" and "Pull complete"; a layer already on the host is "Already exists" (nothing to fetch).
A layer's size is known only once it starts downloading, so the total grows while a pull runs.
"""

from typing import Any

DOWNLOADED = ("Verifying Checksum", "Download complete", "Extracting", "Pull complete")


class PullTally:
    def __init__(self) -> None:
        self.layers: dict[str, tuple[int, int]] = {}  # layer id -> (bytes downloaded, layer size)

    def update(self, message: dict[str, Any]) -> tuple[int, int]:
        """Take one message; returns (bytes downloaded, bytes to download) over the layers seen so far."""
        layer, status = message.get("id"), message.get("status", "")
        detail = message.get("progressDetail") or {}
        if layer and status == "Downloading" and isinstance(detail.get("total"), int) and detail["total"] > 0:
            self.layers[layer] = (min(int(detail.get("current") or 0), detail["total"]), detail["total"])
        elif layer in self.layers and status in DOWNLOADED:
            self.layers[layer] = (self.layers[layer][1], self.layers[layer][1])
        return self.done, self.total

    @property
    def done(self) -> int:
        return sum(current for current, _ in self.layers.values())

    @property
    def total(self) -> int:
        return sum(size for _, size in self.layers.values())
