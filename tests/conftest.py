"""Suite-wide fixtures."""

import jax
import pytest


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
  """Drops JAX's compiled programs after each test module. One pytest process compiles thousands
  of them; kept alive, their code mappings may approach vm.max_map_count (65530), and three full
  runs on one CPU died of a segfault inside XLA's compiler late in the suite."""
  yield
  jax.clear_caches()
