"""Phase progress: live line with ETA on a terminal, one line per long phase otherwise, and the
compile seconds inside each phase."""

import io
import re
import time

import jax
import jax.numpy as jnp

from jaxplay.run import metrics
from jaxplay.run import phases as phases_lib


def test_durations_read_naturally():
  assert [phases_lib.duration(s) for s in (4.25, 185, 3720)] == ["4.2 s", "3 min 05 s",
                                                                 "1 h 02 min"]


def test_compile_seconds_are_counted_inside_the_phase_that_compiles():
  phases = phases_lib.Phases(stream=io.StringIO(), live=False)
  fn = jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x).T + 17.0)
  x = jnp.ones((3, 5))
  with phases("first call"):
    fn(x).block_until_ready()
  with phases("second call"):
    fn(x).block_until_ready()
  first_seconds, first_compiled = phases.last["first call"]
  assert 0 < first_compiled <= first_seconds + 1e-3
  assert phases.last["second call"][1] == 0.0


def test_quiet_unless_a_phase_is_long_when_not_a_terminal():
  stream = io.StringIO()
  phases = phases_lib.Phases(stream=stream, live=False, log_seconds=0.05)
  with phases("short"):
    pass
  with phases("long"):
    time.sleep(0.08)
  with phases("long but folded into another line", report=False):
    time.sleep(0.08)
  assert stream.getvalue().splitlines() == [f"long: {phases.brief('long')}"]
  assert "\r" not in stream.getvalue()


def test_live_line_shows_elapsed_time_and_an_eta_from_the_last_run(monkeypatch):
  monkeypatch.setattr(phases_lib, "LIVE_REPORT_SECONDS", 0.0)
  stream = io.StringIO()
  phases = phases_lib.Phases(stream=stream, live=True, refresh=0.01)
  with phases("step 1: rollout", eta_label="rollout", report=False):
    time.sleep(0.5)
  first = stream.getvalue()
  assert "\r\033[Kstep 1: rollout: 0." in first and "ETA" not in first
  assert "\n" not in first  # report=False: the line is cleared, nothing printed.
  with phases("step 2: rollout", eta_label="rollout"):
    time.sleep(0.05)
  second = stream.getvalue()[len(first):]
  assert re.search(r"step 2: rollout: 0\.0 s \(ETA 0\.[45] s\)", second)
  assert second.endswith(f"\r\033[Kstep 2: rollout: {phases.brief('step 2: rollout')}\n")


def test_step_line_says_where_the_time_went():
  line = metrics.Progress(total_steps=4).line(
      1, {"loss": 0.5}, samples=8, tokens=80,
      phases={"rollout": "42.0 s, compiling 30.0 s", "train": "12.5 s"})
  assert "| rollout 42.0 s, compiling 30.0 s | train 12.5 s | ETA" in line
