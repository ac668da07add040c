"""Where a step's time goes: one call traced by each library's profiler, its op time sorted into
matmuls, layout changes and the rest.

`xla_shares` reads a jax.profiler trace of a compiled program's call against the program's HLO;
`torch_shares` reads torch.profiler's self time of each aten op. Both return ({kind: share of the
op time}, kinds in KINDS; the backward pass's share).
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile
from typing import Any, Callable

import jax

KINDS = ("matmuls", "layout changes", "other")
_MATMUL_OPCODES = {"dot", "convolution"}
_LAYOUT_OPCODES = {"copy", "transpose"}
# Thunks that run others (their own events would count their bodies twice).
_CONTROL_OPCODES = {"while", "conditional", "call"}
# PyTorch's matmul kernels; the CPU attention kernels (their softmax included) count as matmuls.
_TORCH_MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_scaled_dot")
_TORCH_LAYOUT = ("aten::copy_", "aten::clone", "aten::contiguous")
_TORCH_BACKWARD = "autograd::engine::evaluate_function"
_INSTRUCTION = re.compile(r"\s*(?:ROOT )?%(\S+) = .*? ([a-z][\w-]*)\((.*)$")
_COMPUTATION = re.compile(r"(?:ENTRY )?%(\S+) \(.*\{$")


def hlo_kinds(hlo_text: str) -> dict[str, tuple[str, bool]]:
  """{instruction name: (kind, in the backward pass)} of an optimized HLO module's text. A fusion
  is a matmul if it holds a dot or convolution, else a layout change if it holds a copy or
  transpose; the backward pass is what JAX's autodiff named `transpose(...)`."""
  opcodes = collections.defaultdict(set)  # computation -> opcodes in it
  instructions = {}  # name -> (opcode, called computation, backward)
  computation = None
  for line in hlo_text.splitlines():
    header = _COMPUTATION.match(line)
    if header:
      computation = header.group(1)
      continue
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    name, opcode, rest = match.groups()
    opcodes[computation].add(opcode)
    called = re.search(r"calls=%([\w.\-]+)", rest)
    op_name = re.search(r'op_name="([^"]*)"', rest)
    instructions[name] = (opcode, called.group(1) if called else None,
                          bool(op_name and "transpose(" in op_name.group(1)))
  kinds = {}
  for name, (opcode, called, backward) in instructions.items():
    if opcode in _CONTROL_OPCODES:
      continue
    inside = opcodes[called] if opcode == "fusion" and called else {opcode}
    kind = ("matmuls" if inside & _MATMUL_OPCODES else
            "layout changes" if inside & _LAYOUT_OPCODES else "other")
    kinds[name] = (kind, backward)
  return kinds


def xla_shares(call: Callable[[], Any], hlo_text: str) -> tuple[dict[str, float], float]:
  """Traces one `call()` of the compiled program whose optimized HLO is `hlo_text`:
  ({kind: share of the summed op time}, the backward pass's share of it)."""
  kinds = hlo_kinds(hlo_text)
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    try:
      jax.block_until_ready(call())
    finally:
      jax.profiler.stop_trace()
    trace_file, = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
    with gzip.open(trace_file) as f:
      events = json.load(f)["traceEvents"]
  seconds = collections.Counter()
  backward = 0.0
  for event in events:
    if event.get("ph") == "X" and event["name"] in kinds:
      kind, in_backward = kinds[event["name"]]
      seconds[kind] += event["dur"]
      backward += event["dur"] if in_backward else 0.0
  total = sum(seconds.values())
  if not total:
    raise RuntimeError("the trace holds no op of the program: is it the HLO of the call traced?")
  return {kind: seconds[kind] / total for kind in KINDS}, backward / total


def torch_shares(call: Callable[[], Any]) -> tuple[dict[str, float], float]:
  """Profiles one `call()` with torch.profiler: ({kind: share of the aten ops' self CPU time},
  the backward pass's share of it: ops that autograd's engine ran)."""
  import torch  # pylint: disable=import-outside-toplevel

  with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
    call()
  seconds = collections.Counter()
  backward = 0.0
  for event in profile.events():
    if not event.name.startswith("aten::"):
      continue
    kind = ("matmuls" if event.name.startswith(_TORCH_MATMULS) else
            "layout changes" if event.name.startswith(_TORCH_LAYOUT) else "other")
    seconds[kind] += event.self_cpu_time_total
    parent = event.cpu_parent
    while parent is not None and not parent.name.startswith(_TORCH_BACKWARD):
      parent = parent.cpu_parent
    backward += event.self_cpu_time_total if parent is not None else 0.0
  total = sum(seconds.values())
  return {kind: seconds[kind] / total for kind in KINDS}, backward / total
