"""Smoke test of `python -m jaxplay.benchmarks.games` (tiny batch, no timing assertions)."""

import games
from jaxplay import benchmarks
from jaxplay.benchmarks import games as games_benchmark


def test_benchmark_runs_and_appends_dated_rows(tmp_path, capsys):
  output = tmp_path / "BENCHMARKS.md"
  output.write_text("# Benchmarks\n\n## sampler\n\n| a |\n| --- |\n| 1 |\n")
  argv = ["--batches", "4", "--steps", "3", "--repeats", "1", "--output", str(output)]
  rows = games_benchmark.main(argv)
  names = [name for name in games_benchmark.GAMES if name in games.registered_names()]
  assert [row[1] for row in rows] == names and "tic_tac_toe" in names
  assert all(float(row[4].replace(",", "")) > 0 and float(row[6]) > 0 for row in rows)
  assert "ours/pgx" in capsys.readouterr().out

  games_benchmark.main(argv + ["--games", "tic_tac_toe"])
  lines = output.read_text().splitlines()
  header = "| " + " | ".join(games_benchmark.HEADER) + " |"
  assert lines.count(header) == 1
  start = lines.index(header)
  assert len([line for line in lines[start + 2:] if line.startswith("| 20")]) == len(names) + 1
  assert lines[:7] == ["# Benchmarks", "", "## sampler", "", "| a |", "| --- |", "| 1 |"]
  assert benchmarks.machine() in lines[-1] and "cores" in lines[-1]
