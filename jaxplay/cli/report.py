"""A run's HTML report: `python -m jaxplay.cli.report --workdir=DIR` writes `DIR/report.html`.

One self-contained page (the curves are embedded PNGs; no script, stylesheet or font from the
network) that opens from disk: the run's config in brief, the evaluations of every evaluated step
as tables with 95% intervals, the learning curves (`jaxplay.cli.plot`), and the latest transcripts
with each parsed answer (the last `\\boxed{...}`, the one `answers.parse_text` reads) highlighted.
`jaxplay.main` writes it at the end of a run.
"""

from __future__ import annotations

import base64
import html
import os
import re

from absl import app, flags
from etils import epath

from jaxplay import errors
from jaxplay.cli import plot
from jaxplay.run import metrics
from jaxplay.run import workdir as workdir_lib
from jaxplay.text import answers

REPORT = "report.html"
_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 70em; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.6em; text-align: right; }
th:first-child, td:first-child, th:nth-child(2), td:nth-child(2) { text-align: left; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.3em 0; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; white-space: pre-wrap; }
mark { background: #ffe066; font-weight: bold; }
.action { color: #0a5; font-weight: bold; }
"""
# The response and action lines of evaluate.Evaluator's transcripts.
_RESPONSE, _ACTION = ">>> response:", ">>> action:"


def highlight_answer(response: str) -> str:
  """`response` as HTML with its parsed answer (the last `\\boxed{...}`) in a <mark>."""
  content = answers.boxed_content(response)
  if content is None:
    return html.escape(response)
  start = response.rfind(answers.BOX_OPEN)
  end = start + len(answers.BOX_OPEN) + len(content) + 1
  return (html.escape(response[:start]) + "<mark>" + html.escape(response[start:end]) +
          "</mark>" + html.escape(response[end:]))


def transcript_html(transcript: str) -> str:
  """One game's transcript as a <pre>: responses with their answer marked, action lines bold."""
  lines, in_response, response = [], False, []

  def flush():
    if response:
      lines.append(highlight_answer("\n".join(response)))
      response.clear()

  for line in transcript.splitlines():
    if in_response and not line.startswith(_ACTION):
      response.append(line)
      continue
    flush()
    in_response = line == _RESPONSE
    css = ' class="action"' if line.startswith(_ACTION) else ""
    lines.append(f"<span{css}>{html.escape(line)}</span>" if css else html.escape(line))
  flush()
  return "<pre>" + "\n".join(lines) + "</pre>"


def _interval(stats: dict, name: str) -> str:
  value = stats.get(name)
  if value is None:
    return "-"
  low, high = stats.get(f"{name}_low"), stats.get(f"{name}_high")
  return f"{value:.3f}" + ("" if low is None else f" [{low:.2f}, {high:.2f}]")


def eval_tables_html(records: list[dict]) -> str:
  """A table per evaluated step: a row per game and opponent (metrics.eval_table_rows)."""
  columns = metrics.EVAL_TABLE_COLUMNS
  parts = []
  for record in records:
    rows = metrics.eval_table_rows(record)
    if not rows:
      continue
    parts.append(f"<h3>Step {record['step']}</h3><table><tr><th>game</th><th>opponent</th>"
                 "<th>games</th><th>win rate [95%]</th><th>draw rate</th><th>loss rate</th>"
                 "<th>invalid rate</th><th>response length</th></tr>")
    for game, opponent, *values in rows:
      stats = dict(zip(columns, values))
      cells = [html.escape(game), html.escape(opponent),
               "-" if stats["games"] is None else f"{stats['games']:g}",
               _interval(stats, "win_rate"),
               *("-" if stats[c] is None else f"{stats[c]:.3f}"
                 for c in ("draw_rate", "loss_rate", "invalid_rate", "response_length_mean"))]
      parts.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    parts.append("</table>")
  return "".join(parts) or "<p>No evaluation yet.</p>"


def _config_html(workdir: epath.Path) -> str:
  record = workdir_lib.read_config(workdir) or {}
  if not record:
    return "<p>No config.json.</p>"
  brief = [("games", record.get("games")), ("model", record.get("model", {}).get("preset")),
           ("model path", record.get("model", {}).get("path")), ("seed", record.get("seed")),
           ("steps", record.get("train", {}).get("steps")),
           ("estimator", record.get("rl", {}).get("estimator")),
           ("seats", record.get("rollout", {}).get("seats")),
           ("samples per step", record.get("rollout", {}).get("samples_per_step"))]
  rows = "".join(f"<tr><td>{k}</td><td>{html.escape(str(v))}</td></tr>" for k, v in brief)
  return (f"<table>{rows}</table><p>The whole config: <a href=\"config.json\">config.json</a>; "
          "every metric by step: <a href=\"metrics.jsonl\">metrics.jsonl</a>.</p>")


def _image(path: str) -> str:
  data = base64.b64encode(epath.Path(path).read_bytes()).decode("ascii")
  name = os.path.basename(path).removesuffix(".png")
  return f'<h3>{html.escape(name)}</h3><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'


def _latest_transcripts(workdir: epath.Path) -> tuple[str | None, list[str]]:
  folder = workdir / "transcripts"
  files = sorted(folder.glob("step_*.txt")) if folder.exists() else []
  if not files:
    return None, []
  # evaluate.Evaluator's transcripts, joined by blank lines, each opening "=== <game>: learner".
  games = [g for g in re.split(r"\n\n(?==== \S+: learner)", files[-1].read_text()) if g.strip()]
  return f"transcripts/{files[-1].name}", games


def write_report(workdir: str, plots: list[str] | None = None) -> str:
  """Writes `workdir/report.html` (drawing the plots first unless given); returns its path."""
  folder = epath.Path(workdir)
  if plots is None:
    plots = plot.plot_workdir(workdir)  # Raises WorkdirError without metrics.jsonl.
  records = metrics.read_jsonl(os.fspath(folder / "metrics.jsonl"))
  evals = [r for r in records if any(k.startswith("eval/") for k in r)]
  transcript_file, games = _latest_transcripts(folder)
  title = f"jaxplay run {html.escape(folder.name)}"
  body = [f"<h1>{title}</h1>",
          '<p><a href="#config">Config</a> · <a href="#evaluations">Evaluations</a> · '
          '<a href="#curves">Curves</a> · <a href="#transcripts">Transcripts</a></p>',
          '<h2 id="config">Config</h2>', _config_html(folder),
          '<h2 id="evaluations">Evaluations</h2>', eval_tables_html(evals),
          '<h2 id="curves">Curves</h2>', "".join(map(_image, plots)) or "<p>No curves.</p>",
          '<h2 id="transcripts">Transcripts</h2>']
  if transcript_file:
    body.append(f'<p>From <a href="{transcript_file}">{transcript_file}</a>; the parsed answer of '
                "each response is marked.</p>")
    body.extend(transcript_html(game) for game in games)
  else:
    body.append("<p>No transcripts yet.</p>")
  page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
          f"<style>{_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
  path = folder / REPORT
  path.write_text(page)
  return os.fspath(path)


@errors.user_facing
def main(argv):
  del argv
  print(write_report(flags.FLAGS.workdir))


def run() -> None:
  """`python -m jaxplay.cli.report` (the flag is defined here: jaxplay.main has its own --workdir)."""
  flags.DEFINE_string("workdir", None, "Run directory holding metrics.jsonl.", required=True)
  app.run(main)


if __name__ == "__main__":
  run()
