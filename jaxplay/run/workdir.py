"""Run directories on a local disk or in a bucket (`gs://...`), read and written with etils.epath.

A run directory holds what `jaxplay.main` writes (`RUN_ENTRIES`) and, while a process trains in it,
`lock.json` naming that process. A `gs://` path needs `gcsfs` installed (epath reaches buckets
through fsspec). Bucket objects cannot be appended to, so `append_text` rewrites the whole file
there; locally it appends.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import socket

from etils import epath

import games
from jaxplay import errors
from jaxplay.run import spec as spec_lib

PathLike = str | os.PathLike

# Everything a run writes into its directory; `--overwrite` removes exactly these.
RUN_ENTRIES = ("config.json", "checkpoints", "metrics.jsonl", "tensorboard", "wandb",
               "transcripts", "plots", "report.html", "evals.jsonl", "eval_samples")
# Config fields a resumed run may change: they decide how long it runs and what it writes when,
# not what it computes (train.steps also sets a cosine schedule's length: see `resumable_changes`).
RESUMABLE_FIELDS = ("train.steps", "train.eval_every", "train.checkpoint_every",
                    "train.keep_checkpoints", "train.compilation_cache", "train.wandb_project",
                    "train.wandb_mode", "model.tokenizer_cache")


class WorkdirError(errors.UserError):
  """A directory cannot hold this run (another config, another process, not writable, no run)."""


def is_remote(path: PathLike) -> bool:
  """True for URIs such as gs://bucket/run, False for local paths."""
  return "://" in os.fspath(path)


def absolute(path: PathLike) -> str:
  """The path as a string, made absolute when local (a URI is absolute already)."""
  return os.fspath(path) if is_remote(path) else os.path.abspath(path)


def append_text(path: PathLike, text: str) -> None:
  """Appends `text` to a file (created if missing)."""
  path = epath.Path(path)
  if not is_remote(path):
    with path.open("a") as f:
      f.write(text)
    return
  path.write_text((path.read_text() if path.exists() else "") + text)


def check_writable(path: PathLike) -> None:
  """Raises WorkdirError when `path` cannot become a run directory (a file, a read-only place, a
  bucket without gcsfs); touches nothing."""
  path = os.fspath(path)
  if not path:
    raise WorkdirError("--workdir is empty; name a directory.")
  if is_remote(path):
    if path.startswith("gs://") and importlib.util.find_spec("gcsfs") is None:
      raise WorkdirError(f"--workdir={path}: a gs:// workdir needs `pip install gcsfs`.")
    return
  existing = os.path.abspath(path)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise WorkdirError(f"--workdir={path}: {existing} is a file, not a directory.")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise WorkdirError(f"--workdir={path}: {existing} is not writable.")


def read_config(path: PathLike) -> dict | None:
  """The config record (`config.json`) of the run in `path`, or None when there is none."""
  file = epath.Path(path) / "config.json"
  if not file.exists():
    return None
  try:
    return json.loads(file.read_text())
  except json.JSONDecodeError as error:
    raise WorkdirError(f"{file} is not valid JSON ({error}); the run's config is damaged. Restore "
                       "it, or pass --overwrite to start afresh.") from None


def _flatten(record: dict, prefix: str = "") -> dict:
  flat = {}
  for key, value in record.items():
    if isinstance(value, dict) and value:
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def changed_fields(theirs: dict, ours: dict) -> list[str]:
  """Dotted names of the fields whose values differ between two config records."""
  a, b = _flatten(theirs), _flatten(ours)
  return sorted(k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>"))


def resumable_changes(theirs: dict, ours: dict) -> tuple[list[str], list[str]]:
  """(changes a resumed run may make, changes it may not) between two config records."""
  changed = changed_fields(theirs, ours)
  resumable = set(RESUMABLE_FIELDS)
  if _flatten(ours).get("optimizer.schedule") == "cosine":
    resumable.discard("train.steps")  # The schedule's length.
  return ([f for f in changed if f in resumable], [f for f in changed if f not in resumable])


def _with_game_defaults(record: dict, other: dict) -> dict:
  """`record` with each game option that `other` sets and it leaves out at the game's default
  (a record written before the game had that option)."""
  options, others = record.get("game_options"), other.get("game_options")
  if not isinstance(options, dict) or not isinstance(others, dict):
    return record
  filled = {}
  for name, given in options.items():
    if isinstance(given, dict) and isinstance(others.get(name), dict) and (
        name in games.registered_names()):
      defaults = games.default_options(name)
      given = {**{k: defaults[k] for k in others[name] if k in defaults and k not in given},
               **given}
    filled[name] = given
  return {**record, "game_options": filled}


def check_resumable(path: PathLike, ours: dict, has_checkpoints: bool) -> None:
  """Raises WorkdirError when `path` holds a run that a run of config `ours` may not continue.

  A run that saved no checkpoint has nothing to continue and may be replaced."""
  theirs = read_config(path)
  if theirs is None or not has_checkpoints:
    return
  try:  # A record older than a field with a default holds that default.
    theirs = spec_lib.as_record(spec_lib.from_mapping(theirs))
  except spec_lib.SpecError:
    pass  # Compared as written: its differences are named below.
  _, refused = resumable_changes(_with_game_defaults(theirs, ours),
                                 _with_game_defaults(ours, theirs))
  if refused:
    shown = ", ".join(refused[:8]) + (f" and {len(refused) - 8} more" if len(refused) > 8 else "")
    raise WorkdirError(f"{path} holds a run of a different config (differs in {shown}); use "
                       "another --workdir, or pass --overwrite to replace that run.")


def remove_run(path: PathLike) -> list[str]:
  """Deletes what a run wrote in `path` (RUN_ENTRIES; other files stay); returns what it removed."""
  removed = []
  for name in RUN_ENTRIES:
    entry = epath.Path(path) / name
    if entry.is_dir():
      entry.rmtree()
    elif entry.exists():
      entry.unlink()
    else:
      continue
    removed.append(name)
  return removed


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class RunLock:
  """`path/lock.json` names the process training in `path`: {host, pid, started}.

  `acquire` refuses when another live process holds it; a lock left by a process that is gone
  (same host, no such pid; or a torn file) is taken over. A lock from another host cannot be
  checked: the refusal says to delete it if that process is gone. Use as a context manager.
  """

  def __init__(self, path: PathLike):
    self.file = epath.Path(path) / "lock.json"
    self._held = False

  def _holder(self) -> dict | None:
    try:
      return json.loads(self.file.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
      return None

  def _stale(self, holder: dict | None) -> bool:
    if holder is None:
      return True
    return holder.get("host") == socket.gethostname() and not _alive(int(holder.get("pid", -1)))

  def check(self) -> None:
    """Raises WorkdirError when a live process holds the lock; takes nothing."""
    holder = self._holder() if self.file.exists() else None
    if holder is not None and not self._stale(holder):
      raise self._refusal(holder)

  def _refusal(self, holder: dict) -> WorkdirError:
    return WorkdirError(f"{self.file.parent} is in use by process {holder.get('pid')} on "
                        f"{holder.get('host')} (since {holder.get('started')}); wait for it to "
                        f"end, or delete {self.file} if that process is gone.")

  def acquire(self) -> None:
    record = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started":
                         datetime.datetime.now().isoformat(timespec="seconds")})
    self.file.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
      try:
        if is_remote(self.file):  # Buckets have no exclusive create: check, then write.
          if self.file.exists():
            raise FileExistsError(os.fspath(self.file))
          self.file.write_text(record)
        else:
          with open(self.file, "x", encoding="utf-8") as f:
            f.write(record)
        self._held = True
        return
      except FileExistsError:
        holder = self._holder()
        if not self._stale(holder):
          raise self._refusal(holder) from None
        print(f"Taking over the stale lock of a process that is gone: {holder}.", flush=True)
        self.file.unlink(missing_ok=True)
    raise WorkdirError(f"could not take the lock {self.file}; another process keeps creating it.")

  def release(self) -> None:
    if self._held:
      self.file.unlink(missing_ok=True)
      self._held = False

  def __enter__(self) -> RunLock:
    self.acquire()
    return self

  def __exit__(self, *exc_info) -> None:
    self.release()
