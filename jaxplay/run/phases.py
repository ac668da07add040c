"""What a run is doing while it takes seconds to minutes: loading, compiling, rollouts, train
steps, evaluations.

`Phases` times each named phase. On a terminal it keeps one live line (elapsed time, and an ETA
from the last run of the same phase, e.g. step 2's rollout from step 1's); otherwise it is quiet
and logs one line per phase that took `log_seconds` or more (on a terminal, every phase of a
second or more leaves its line). Each phase also reports the seconds JAX spent compiling inside
it (tracing, lowering and XLA, or reading the persistent compilation cache), counted by a
`jax.monitoring` listener. Progress is per phase, not per turn
inside a compiled rollout: a host callback inside the program would keep it out of the
persistent compilation cache.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import IO, Iterator

from jax import monitoring

# JAX's duration events of one compilation (jax/_src/dispatch.py).
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")


class _CompileClock:
  """Seconds JAX has spent compiling in this process (one listener for all `Phases`)."""

  def __init__(self):
    self.seconds = 0.0
    self._lock = threading.Lock()
    monitoring.register_event_duration_secs_listener(self._record)

  def _record(self, event: str, duration: float, **kwargs) -> None:
    del kwargs
    if event in COMPILE_EVENTS:
      with self._lock:
        self.seconds += duration


_compile_clock: _CompileClock | None = None


def compile_seconds() -> float:
  """Seconds spent compiling so far (counted from the first call)."""
  global _compile_clock
  if _compile_clock is None:
    _compile_clock = _CompileClock()
  return _compile_clock.seconds


def duration(seconds: float) -> str:
  """'42.0 s', '3 min 05 s' or '1 h 02 min'."""
  if seconds < 60:
    return f"{seconds:.1f} s"
  minutes = int(seconds) // 60
  if minutes < 60:
    return f"{minutes} min {int(seconds) % 60:02d} s"
  return f"{minutes // 60} h {minutes % 60:02d} min"


LIVE_REPORT_SECONDS = 1.0  # On a terminal, phases this long leave a line when they end.


class Phases:
  """`with phases("evaluation of tic_tac_toe vs random"):` times a phase; `last[label]` holds
  (seconds, compile seconds) of its latest run.

  live: a refreshed line (default: whether `stream` is a terminal); else one line per phase of
  `log_seconds` or more. `refresh` is the live line's period in seconds.
  """

  def __init__(self, stream: IO[str] | None = None, live: bool | None = None,
               log_seconds: float = 10.0, refresh: float = 0.5):
    self._stream = stream or sys.stdout
    self.live = self._stream.isatty() if live is None else live
    self._log_seconds = log_seconds
    self._refresh = refresh
    self.last: dict[str, tuple[float, float]] = {}
    compile_seconds()  # Starts counting now.

  @contextlib.contextmanager
  def __call__(self, label: str, eta_label: str | None = None,
               report: bool = True) -> Iterator[None]:
    """Times `label`; the ETA comes from the last run of `eta_label` (default: `label`).
    `report=False`: no line at the end (the caller reports `brief(label)` its own way)."""
    previous = self.last.get(eta_label or label)
    start, compiled_before = time.perf_counter(), compile_seconds()
    stop = threading.Event()
    ticker = None
    if self.live:
      ticker = threading.Thread(target=self._tick, args=(label, start, previous, stop),
                                daemon=True)
      ticker.start()
    try:
      yield
    finally:
      stop.set()
      if ticker is not None:
        ticker.join()
      seconds = time.perf_counter() - start
      compiled = compile_seconds() - compiled_before
      self.last[eta_label or label] = self.last[label] = (seconds, compiled)
      if self.live:
        self._write("\r\033[K")
      if report and seconds >= (LIVE_REPORT_SECONDS if self.live else self._log_seconds):
        self._write(f"{label}: {self.brief(label)}\n")

  def brief(self, label: str) -> str:
    """'42.0 s', or '95.0 s, compiling 60.0 s' (compiling >= 1 s), of `label`'s latest run."""
    seconds, compiled = self.last[label]
    return duration(seconds) + (f", compiling {duration(compiled)}" if compiled >= 1 else "")

  def _tick(self, label: str, start: float, previous, stop: threading.Event) -> None:
    while not stop.wait(self._refresh):
      elapsed = time.perf_counter() - start
      text = f"\r\033[K{label}: {duration(elapsed)}"
      if previous is not None:
        # The last run's compile time is not spent again (the program is compiled by now).
        left = previous[0] - previous[1] - elapsed
        text += f" (ETA {duration(max(left, 0.0))})" if left > 0 else " (longer than last time)"
      self._write(text)

  def _write(self, text: str) -> None:
    self._stream.write(text)
    self._stream.flush()
