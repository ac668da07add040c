"""The run's HTML report: self-contained, its figures are the run's, answers marked; and in a real
headless browser (slow): no console errors, every image and link resolves."""

import html
import json
import os
import re
import subprocess
import sys
import urllib.parse
from html.parser import HTMLParser

import pytest

from jaxplay.cli import report
from tests import stand_ins

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHROMIUM = "/usr/bin/chromium"
TRANSCRIPTS = """=== kuhn_poker: learner (player 0) vs random ===
--- turn 0, player 0 (learner) ---
Example: \\boxed{bet}
Your legal actions: [check], [bet]
>>> response:
I hold a <K>. Not \\boxed{check} but
\\boxed{bet}
>>> action: 1
--- turn 1, player 1 (random) ---
Your legal actions: [call], [fold]
>>> action: 3
=== returns [1.0, -1.0], invalid False ===

=== tic_tac_toe: learner (player 1) vs random ===
--- turn 0, player 0 (random) ---
>>> action: 4
--- turn 1, player 1 (learner) ---
>>> response:
no box here
>>> action: -1
=== returns [0.5, -1.0], invalid True ==="""


class _Page(HTMLParser):
  def __init__(self):
    super().__init__()
    self.images, self.links, self.ids, self.marks, self._in_mark = [], [], set(), [], False

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if "id" in attrs:
      self.ids.add(attrs["id"])
    if tag == "img":
      self.images.append(attrs["src"])
    elif tag == "a":
      self.links.append(attrs["href"])
    self._in_mark = tag == "mark"

  def handle_data(self, data):
    if self._in_mark:
      self.marks.append(data)
      self._in_mark = False


def _fake_run(folder):
  folder.mkdir()
  (folder / "config.json").write_text(json.dumps(
      {"games": "kuhn_poker,tic_tac_toe", "seed": 1, "model": {"preset": "tiny", "path": ""},
       "train": {"steps": 2}, "rl": {"estimator": "rloo"}, "rollout": {"seats": "self_play"}}))
  evaluation = {"eval/kuhn_poker/random/games": 64, "eval/kuhn_poker/random/win_rate": 0.75,
                "eval/kuhn_poker/random/win_rate_low": 0.63,
                "eval/kuhn_poker/random/win_rate_high": 0.84,
                "eval/kuhn_poker/random/invalid_rate": 0.0}
  records = [{"step": 0, **evaluation}, {"step": 1, "loss": 0.5, "reward_mean": -0.2},
             {"step": 2, "loss": 0.25, "reward_mean": 0.1,
              **{k: v / 2 for k, v in evaluation.items()}}]
  (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  (folder / "transcripts").mkdir()
  (folder / "transcripts" / "step_000002.txt").write_text(TRANSCRIPTS + "\n")


def test_answer_mark_is_the_parsed_box():
  assert report.highlight_answer("a <b> \\boxed{x} then \\boxed{y{1}} end") == (
      "a &lt;b&gt; \\boxed{x} then <mark>\\boxed{y{1}}</mark> end")
  assert report.highlight_answer("\\boxed{open") == "\\boxed{open"


def test_report_is_self_contained_and_shows_the_run(tmp_path):
  run = tmp_path / "run"
  _fake_run(run)
  path = report.write_report(str(run))
  page = _Page()
  page.feed(open(path).read())
  text = open(path).read()
  assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
  for link in page.links:
    assert link[1:] in page.ids if link.startswith("#") else (run / link).is_file(), link
  assert "<td>kuhn_poker</td><td>random</td><td>64</td><td>0.750 [0.63, 0.84]</td>" in text
  assert "<td>32</td><td>0.375 [0.32, 0.42]</td>" in text  # Step 2's row.
  assert page.marks == ["\\boxed{bet}"]  # Responses only; the example in the prompt is not one.
  assert html.escape("I hold a <K>.") in text and '<span class="action">&gt;&gt;&gt; action: 1' in text


@pytest.mark.slow
def test_report_of_a_real_run_in_a_headless_browser(tmp_path):
  """The main command prints the report's path; Chromium loads it from disk without console
  errors or failed requests, every image decodes, every link resolves, and the evaluation table
  holds the run's last win rate."""
  assert os.path.exists(CHROMIUM), "needs Debian's chromium: apt-get install chromium"
  from playwright.sync_api import sync_playwright  # pylint: disable=import-outside-toplevel
  workdir = tmp_path / "run"
  result = subprocess.run(
      [sys.executable, "-m", "jaxplay.main", "--config=configs/kuhn_nash.py",
       f"--workdir={workdir}", *stand_ins.tiny_kuhn_flags(**{"train.steps": 2,
                                                             "train.eval_every": 2})],
      cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  [path] = re.findall(r"^  report: (.+)$", result.stdout, re.M)
  last = [json.loads(l) for l in open(workdir / "metrics.jsonl") if '"eval/' in l][-1]
  problems = []
  with sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"])
    page = browser.new_page()
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("requestfailed", lambda r: problems.append(f"{r.url}: {r.failure}"))
    page.goto("file://" + path)
    page.wait_for_load_state("load")
    images = page.eval_on_selector_all("img", "els => els.map(e => e.complete && e.naturalWidth)")
    links = page.eval_on_selector_all("a", "els => els.map(e => e.getAttribute('href'))")
    ids = set(page.eval_on_selector_all("[id]", "els => els.map(e => e.id)"))
    cells = page.eval_on_selector_all("table:last-of-type td", "els => els.map(e => e.innerText)")
    browser.close()
  assert not problems, problems
  assert len(images) >= 3 and all(width > 0 for width in images), images
  for link in links:
    target = urllib.parse.unquote(link)
    assert target[1:] in ids if target.startswith("#") else (workdir / target).is_file(), link
  win = last["eval/kuhn_poker/random/win_rate"]
  assert cells[:4] == ["kuhn_poker", "random", f"{last['eval/kuhn_poker/random/games']:g}",
                       f"{win:.3f} [{last['eval/kuhn_poker/random/win_rate_low']:.2f}, "
                       f"{last['eval/kuhn_poker/random/win_rate_high']:.2f}]"]
