"""Side-by-side benchmarks: `python -m jaxplay.benchmarks.<name>` prints a table and appends dated
rows to BENCHMARKS.md, with the machine they ran on."""

from __future__ import annotations

import os
import pathlib
import platform
import statistics
import time
from typing import Any, Callable, Sequence

import jax

BENCHMARKS_MD = pathlib.Path(__file__).resolve().parents[2] / "BENCHMARKS.md"


def machine() -> str:
  """CPU model and usable cores (from /proc/cpuinfo), the accelerator if any, the jax version."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  device = jax.devices()[0]
  accelerator = "" if device.platform == "cpu" else f", {device.device_kind}"
  return f"{cpu}, {len(os.sched_getaffinity(0))} cores{accelerator}, jax {jax.__version__}"


def median_seconds(calls: Sequence[Callable[[], Any]], repeats: int) -> list[float]:
  """Median wall time of each call over `repeats` rounds, after one untimed warm-up call each.

  The calls alternate within each round, so a change in machine load affects them alike.
  """
  return first_and_median_seconds(calls, repeats)[1]


def first_and_median_seconds(calls: Sequence[Callable[[], Any]], repeats: int
                             ) -> tuple[list[float], list[float]]:
  """(first, median) wall times of each call: the first call (with its compilation or other
  warm-up) alone, then the median of `repeats` alternating rounds as in `median_seconds`."""
  first = []
  for call in calls:
    start = time.perf_counter()
    jax.block_until_ready(call())
    first.append(time.perf_counter() - start)
  times = [[] for _ in calls]
  for _ in range(repeats):
    for call, call_times in zip(calls, times):
      start = time.perf_counter()
      jax.block_until_ready(call())
      call_times.append(time.perf_counter() - start)
  return first, [statistics.median(t) for t in times]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
  return ["| " + " | ".join(map(str, row)) + " |"
          for row in [header, ["---"] * len(header), *rows]]


def append_rows(section: str, header: Sequence[str], rows: Sequence[Sequence[str]],
                path: pathlib.Path = BENCHMARKS_MD) -> None:
  """Appends rows to the table under `## {section}` in `path`, creating the file or section."""
  lines = path.read_text().splitlines() if path.exists() else ["# Benchmarks"]
  title = f"## {section}"
  if title not in lines:
    lines += ["", title, ""]
  start = lines.index(title) + 1
  end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
  table = [i for i in range(start, end) if lines[i].startswith("|")]
  if table:
    lines[table[-1] + 1:table[-1] + 1] = markdown_table(header, rows)[2:]
  else:
    lines[end:end] = markdown_table(header, rows) + ([""] if end < len(lines) else [])
  path.write_text("\n".join(lines) + "\n")
