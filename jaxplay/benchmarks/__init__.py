"""Side-by-side benchmarks: `python -m jaxplay.benchmarks.<name>` prints a table and appends dated
rows to BENCHMARKS.md, with the machine they ran on."""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from jaxplay.models import loading, transformer, weight_files
from jaxplay.models.configs import DTYPES, ModelConfig
from jaxplay.text import tokenizer

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


def add_side_by_side_flags(parser: argparse.ArgumentParser) -> None:
  """--model, --repeats, --dtypes, --peer-dtypes and --output, shared by the benchmarks against
  another library; `parse_side_by_side` reads them."""
  parser.add_argument("--model", default="",
                      help="a .gguf file or an HF checkpoint directory that both sides load "
                      "(default: the offline Gemma 3 270M GGUF package)")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES),
                      default=("float32", "bfloat16"), help="our dtypes (each timed)")
  parser.add_argument("--peer-dtypes", nargs="+", choices=sorted(DTYPES),
                      help="the other library's dtypes (default: float32 and bfloat16, whatever "
                      "--dtypes: its best is only known by timing both); leave out one that runs "
                      "far slower than the others on this machine, and say so with the row")
  parser.add_argument("--output", default=str(BENCHMARKS_MD),
                      help="markdown file the dated rows are appended to ('' to skip)")


def parse_side_by_side(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
  """The parsed flags, --peer-dtypes defaulting to every dtype (float32, bfloat16): the episode's
  host loop once ran 2.0x faster in bfloat16 where the sampler's rows had float32 ahead
  (BENCHMARKS.md), so the peer's best is timed, not assumed. A --model that is neither a .gguf
  file nor an HF checkpoint directory is a one-line error naming the flag."""
  args = parser.parse_args(argv)
  args.peer_dtypes = tuple(args.peer_dtypes or ("float32", "bfloat16"))
  if args.model:
    try:
      loading.check(args.model)
    except weight_files.ModelFileError as error:
      parser.error(f"--model: {error}")
  return args


def model_path(flag: str) -> str:
  """The file or folder the benchmarks load for --model `flag` ('' = the offline Gemma 3 270M)."""
  return flag or loading.gemma3_270m_default()


def model_name(flag: str) -> str:
  """A row's model cell: gemma3_270m for the default --model, else the file or folder's name."""
  return os.path.basename(os.path.normpath(flag)) if flag else "gemma3_270m"


def load_tokenizer(path: str):
  """The tokenizer of `path` (a .gguf file or an HF folder), a GGUF's conversion cached where
  configs/spiral.py caches it."""
  from configs import spiral  # pylint: disable=import-outside-toplevel
  return tokenizer.load_tokenizer(path, spiral.get_config("local").model.tokenizer_cache)


def torch_device() -> str:
  """Where the other library runs: 'cuda' when JAX runs on a GPU and PyTorch sees one, so both
  sides share the kind of device, else 'cpu'."""
  import torch  # pylint: disable=import-outside-toplevel
  return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def load_peer(path: str, dtype: str):
  """The transformers model of `path` (a .gguf file or an HF checkpoint directory), weights in
  `dtype`, in eval mode on `torch_device()`."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  gguf = {}
  if path.endswith(".gguf"):
    path, gguf["gguf_file"] = os.path.split(os.path.abspath(path))
  model = transformers.AutoModelForCausalLM.from_pretrained(
      path, dtype=getattr(torch, dtype), local_files_only=True, trust_remote_code=False, **gguf)
  return model.eval().to(torch_device())


def add_int8_flags(parser: argparse.ArgumentParser) -> None:
  """--int8-logits, --int8-weights: ours also runs each of --dtypes with them (`our_variants`)."""
  parser.add_argument("--int8-logits", action="store_true",
                      help="also time ours with int8 logits (rollout.int8_logits) at each dtype")
  parser.add_argument("--int8-weights", action="store_true",
                      help="also time ours with int8 layer weights (rollout.int8_weights) at each "
                      "dtype (and with both, if --int8-logits too)")


def our_variants(dtypes, int8_logits: bool, int8_weights: bool = False
                 ) -> dict[str, tuple[str, dict[str, bool]]]:
  """{label: (dtype, int8 settings)}: each dtype in float, then, as asked, with int8 logits
  ("<dtype> int8 logits"), int8 layer weights ("<dtype> int8 weights") and both ("<dtype> int8
  weights, logits"); the settings are `sampling.sample`'s and `rollout`'s keywords. The int8 runs
  approximate the model: "ours best" stays among the float ones."""
  kinds = {"": {}}
  if int8_logits:
    kinds[" int8 logits"] = dict(int8_logits=True)
  if int8_weights:
    kinds[" int8 weights"] = dict(int8_weights=True)
  if int8_logits and int8_weights:
    kinds[" int8 weights, logits"] = dict(int8_logits=True, int8_weights=True)
  return {dtype + kind: (dtype, settings) for kind, settings in kinds.items() for dtype in dtypes}


def by_dtype(values: dict[str, float]) -> str:
  """{dtype: figure} as one table cell: one decimal, two below 10 (a rate of 1.4 vs 1.5 would
  leave a ratio anywhere in 1.03-1.15)."""
  return ", ".join(f"{dtype} {value:,.{2 if abs(value) < 10 else 1}f}"
                   for dtype, value in values.items())


def matmul_flops_per_second(dtype: str = "float32", n: int | None = None,
                            repeats: int = 5) -> float:
  """FLOP/s of a jitted [n, n] @ [n, n] matmul in `dtype` as the model runs its dots
  (`transformer.dot`: bfloat16 inputs summed in float32): the machine's practical peak for that
  dtype (a CPU with bfloat16 dot kernels runs bfloat16 several times float32's rate). n defaults
  to 2048 on a CPU and 8192 on an accelerator, where a smaller matmul times its launch."""
  n = n or (2048 if jax.default_backend() == "cpu" else 8192)
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  matmul = jax.jit(lambda a, b: transformer.dot("ij,jk->ik", a, b))
  [seconds] = median_seconds([lambda: matmul(a, b)], repeats)
  return 2 * n ** 3 / seconds


def memory_bytes_per_second(megabytes: int = 1024, repeats: int = 5) -> float:
  """Bytes/s a jitted float32 sum reads from a `megabytes` array (far larger than the caches):
  the machine's practical memory bandwidth, the roofline of a decode step at small batch."""
  x = jnp.ones((megabytes * 2 ** 18,), jnp.float32)
  total = jax.jit(jnp.sum)
  [seconds] = median_seconds([lambda: total(x)], repeats)
  return x.nbytes / seconds


def decode_bytes_per_step(weight_bytes: int, config: ModelConfig, batch: int, context: float,
                          dtype_bytes: int) -> float:
  """Bytes one decode step of `batch` rows must read: every weight once (the tied embedding too,
  for the logits) and each row's cached keys and values over `context` positions."""
  c = config
  cache = batch * c.num_layers * 2 * c.num_kv_heads * c.head_dim * context * dtype_bytes
  return weight_bytes + cache


def roofline_rate(batch: int, flops_per_token: float, bytes_per_step: float, peak_flops: float,
                  bytes_per_second: float) -> tuple[float, str]:
  """(decode tokens/s, the bound that sets it: "matmul" or "memory") of a step of `batch` rows that
  runs at the matmul peak or reads its bytes at the measured bandwidth, whichever takes longer."""
  compute_s = batch * flops_per_token / peak_flops
  memory_s = bytes_per_step / bytes_per_second
  return batch / max(compute_s, memory_s), "matmul" if compute_s >= memory_s else "memory"


def layer_flops_per_token(config: ModelConfig, context: float) -> float:
  """Forward matmul FLOPs of the decoder layers for one token whose query sees `context` keys:
  projections, MLP, attention scores and weighted values (no unembedding)."""
  c = config
  attention_params = c.d_model * c.head_dim * (2 * c.num_heads + 2 * c.num_kv_heads)
  per_layer = attention_params + 3 * c.d_model * c.mlp_dim
  attention = 4 * c.num_heads * c.head_dim * context
  return c.num_layers * (2 * per_layer + attention)


def unembed_flops(config: ModelConfig) -> float:
  """Forward FLOPs of one position's logits over the vocabulary."""
  return 2 * config.vocab_size * config.d_model


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


def torch_machine(repeats: int | None = None) -> str:
  """`machine()` with the PyTorch version and where it ran (its threads, or its GPU), and the
  repeats if given: a side-by-side row's machine cell."""
  import torch  # pylint: disable=import-outside-toplevel
  where = (f"{torch.get_num_threads()} threads" if torch_device() == "cpu"
           else torch.cuda.get_device_name())
  cell = f"{machine()}, torch {torch.__version__} ({where})"
  return cell if repeats is None else f"{cell}, {repeats} repeats"


def report(section: str, header: Sequence[str], rows: Sequence[Sequence[str]],
           output: str) -> None:
  """Prints the rows as a table and appends them under `## {section}` of `output` ('' = no)."""
  print("\n".join(markdown_table(header, rows)))
  if output:
    append_rows(section, header, rows, pathlib.Path(output))


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
