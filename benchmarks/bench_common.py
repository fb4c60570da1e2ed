"""Helpers shared by the benchmark scripts: a line describing the machine, and writing a report."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    """CPU model, logical cores and the versions of Python, torch and numpy."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical cores, Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}"


def seed_table(rows: dict, columns) -> list[str]:
    """Markdown lines of a per-seed table of scores, with a mean row and each seed's seconds.

    Parameters
    ----------
    rows : dict
        ``{seed: {key: score, ..., "seconds": s}}``.
    columns : sequence of (key, title)
        The scores shown, in order (printed to 3 decimals).
    """
    lines = ["| seed | " + " | ".join(title for _, title in columns) + " | s |", "| --- |" + " --- |" * (len(columns) + 1)]
    for seed, row in rows.items():
        lines.append(f"| {seed} | " + " | ".join(f"{row[key]:.3f}" for key, _ in columns) + f" | {row['seconds']:.0f} |")
    mean = {key: np.mean([row[key] for row in rows.values()]) for key, _ in columns}
    lines.append("| mean | " + " | ".join(f"{mean[key]:.3f}" for key, _ in columns) + " | |")
    return lines


def publish(text: str, name: str, quick: bool, write: bool) -> str:
    """Print a report and, if ``write``, store it as ``results/<name>[_quick].md``; returns ``text``."""
    print(text)
    if write:
        path = RESULTS / (f"{name}_quick.md" if quick else f"{name}.md")
        path.write_text(text)
        print(f"wrote {path}", file=sys.stderr)
    return text
