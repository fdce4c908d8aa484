"""The benchmark's picture: one deploy under load as a timeline, zdd and the Bash recipe side by side.

Every request is a dot at (when it was sent, how long it took), coloured by the version that answered it,
a red cross when it failed; the deploy's steps are bands (zdd's from the STATUS lines it sent systemd,
the recipe's from the marks it printed); p50 and p99 per quarter second are lines. Needs matplotlib
(`pip install matplotlib`, in the `bench` extra); without it the benchmark prints its figures only.
"""

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.load import Result

COLOURS = {"v1": "#4C72B0", "v2": "#55A868"}
STEP_COLOURS = ["#f2f2f2", "#e0ecf8", "#fdf0d5", "#e4f4e4", "#f8e0e0", "#ece2f4", "#eeeeee"]
BIN = 0.25  # seconds per percentile point


@dataclass
class Run:
    name: str
    t0: float  # monotonic: the enqueue (zdd) or the recipe's start
    results: list[Result]
    steps: list[tuple[float, str]] = field(default_factory=list)  # (monotonic start, name), in order
    end: float = 0.0  # monotonic: the deploy's last step ended


def step_name(status: str) -> str:
    """`web: v1 -> v2: draining v1 (3 in flight)` -> `draining`: the step, without its figures."""
    words = status.rsplit(": ", 1)[-1].split()
    return words[0] if words else status


def zdd_steps(statuses: list[tuple[float, str]], t0: float) -> list[tuple[float, str]]:
    """The STATUS lines of the deploy (after t0), one band per step."""
    steps: list[tuple[float, str]] = []
    for at, message in statuses:
        for line in message.splitlines():
            if at < t0 or not line.startswith("STATUS=") or "->" not in line:
                continue
            name = step_name(line.removeprefix("STATUS="))
            if not steps or steps[-1][1] != name:
                steps.append((at, name))
    return steps


def draw(runs: list[Run], path: Path) -> bool:
    """Write the PNG; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    span = max(max(r.ended for r in run.results) - run.t0 for run in runs)
    fig, axes = plt.subplots(len(runs), 1, figsize=(11, 3.6 * len(runs)), sharex=True, squeeze=False)
    for ax, run in zip(axes[:, 0], runs, strict=True):
        _bands(ax, run, span)
        ok = [r for r in run.results if r.ok]
        for version, colour in COLOURS.items():
            mine = [r for r in ok if r.body == version]
            ax.scatter(
                [r.started - run.t0 for r in mine],
                [(r.ended - r.started) * 1000 for r in mine],
                s=3,
                color=colour,
                label=f"answered by {version}",
                alpha=0.5,
                linewidths=0,
            )
        failed = [r for r in run.results if not r.ok]
        ax.scatter(
            [r.started - run.t0 for r in failed],
            [max((r.ended - r.started) * 1000, 0.1) for r in failed],
            s=30,
            color="#C44E52",
            marker="x",
            label=f"failed ({len(failed)})",
        )
        for q, style in ((50, "-"), (99, "--")):
            xs, ys = _percentile_line([r for r in ok if r.kind != "slow"], run.t0, q)
            ax.plot(xs, ys, style, color="black", linewidth=0.8, label=f"p{q} (not the 1.5 s slow requests)")
        ax.set_yscale("log")
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"{run.name}: {len(run.results)} requests, {len(failed)} failed")
        ax.legend(loc="upper left", fontsize=7, ncol=3)
    axes[-1, 0].set_xlabel("seconds since the deploy was asked for")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _bands(ax, run: Run, span: float) -> None:
    edges = [(at - run.t0, name) for at, name in run.steps]
    labelled = float("-inf")
    for i, (start, name) in enumerate(edges):
        end = edges[i + 1][0] if i + 1 < len(edges) else (run.end - run.t0 if run.end else span)
        ax.axvspan(start, max(end, start + 0.01), color=STEP_COLOURS[i % len(STEP_COLOURS)], zorder=0)
        # Steps a few ms apart (switched, then draining) would print over each other: one label, "a / b".
        if start - labelled < 0.12:
            ax.texts[-1].set_text(f"{ax.texts[-1].get_text()} / {name}")
            continue
        labelled = start
        ax.text(start + 0.03, 0.03, name, transform=ax.get_xaxis_transform(), fontsize=7, rotation=90, va="bottom")
    if run.end:
        ax.axvline(run.end - run.t0, color="grey", linewidth=0.8)


def _percentile_line(results: list[Result], t0: float, q: int) -> tuple[list[float], list[float]]:
    bins: dict[int, list[float]] = {}
    for r in results:
        bins.setdefault(int((r.started - t0) // BIN), []).append((r.ended - r.started) * 1000)
    xs, ys = [], []
    for b in sorted(bins):
        values = bins[b]
        if len(values) >= 4:
            xs.append((b + 0.5) * BIN)
            ys.append(statistics.quantiles(values, n=100, method="inclusive")[q - 1])
    return xs, ys
