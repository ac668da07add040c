"""User errors, and the wrapper that makes every entry point print them as one line.

A `UserError` is a mistake in the user's input (a config field, a flag, a file, a workdir); its
message names it and the fix. Entry points wrapped in `user_facing` print `error: <message>` on
stderr and exit 2 for these, and exit 130 with one line on a second Ctrl-C; any other exception is
a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

Result = TypeVar("Result")


class UserError(Exception):
  """Bad input (config, flag, file, workdir); the message names it and the fix."""


def fail(message: str, code: int = 2):
  """Prints `error: message` on stderr and exits with `code`."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  raise SystemExit(code)


def user_facing(main: Callable[..., Result]) -> Callable[..., Result]:
  """`main` with UserError and KeyboardInterrupt turned into one line and a non-zero exit."""

  @functools.wraps(main)
  def wrapped(*args, **kwargs):
    try:
      return main(*args, **kwargs)
    except UserError as error:
      fail(str(error))
    except KeyboardInterrupt:
      fail("interrupted.", code=130)
  return wrapped
