"""Suite-wide fixtures."""

import os
import shutil
import tempfile

import jax
import pytest

# Programs that take this long to compile are kept on disk for the rest of the session.
CACHED_COMPILE_SECONDS = 0.5
# LLVM's optimisation of the CPU code XLA emits. The suite's many small programs spend longer
# compiling than running: level 0 took the default suite from 43 to 35 minutes on 2 cores
# (2026-12-05, both with two xdist workers). XLA reads
# it when the backend starts, so it is set at import; child processes inherit it. An XLA_FLAGS
# that names a level already is left as it is.
BACKEND_OPTIMIZATION_FLAG = "--xla_backend_optimization_level=0"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {BACKEND_OPTIMIZATION_FLAG}".strip()


def pytest_configure(config):
  """One persistent compilation cache for the session, set before anything compiles: the many
  tests that build the same tiny runs (and the runs resumed inside one test) load a program
  compiled once instead of compiling it again after `_release_compiled_programs`. It is deleted
  when the session ends."""
  cache = tempfile.mkdtemp(prefix="jaxplay-tests-xla-")
  config.add_cleanup(lambda: shutil.rmtree(cache, ignore_errors=True))
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHED_COMPILE_SECONDS)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
  """Drops JAX's compiled programs after each test module. One pytest process compiles thousands
  of them; kept alive, their code mappings may approach vm.max_map_count (65530), and three full
  runs on one CPU died of a segfault inside XLA's compiler late in the suite."""
  yield
  jax.clear_caches()
