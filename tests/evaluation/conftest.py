"""Fixtures of the math evaluation tests."""

import pytest


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """An empty tfds data dir: the math sets are prepared into it from the installed package."""
  return str(tmp_path_factory.mktemp("tfds"))
