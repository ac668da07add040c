"""Math answer grading: the last `\\boxed{}` of a response against a reference answer.

Rules:
1. The predicted answer is the content of the response's last `\\boxed{...}`
   (`answers.boxed_content`);
   no box, or an unclosed last box, is wrong.
2. A reference is its last `\\boxed{}` if it has one, else the text after GSM8K's last `####`, else
   the whole text.
3. Both answers are normalised (`normalise`): LaTeX spacing, `\\left`/`\\right`, `$`, `%`, degree
   marks and `\\text{}`-like wrappers go, `\\dfrac`/`\\tfrac` become `\\frac`, a trailing period goes,
   and only the right-hand side of an `=` is kept.
4. Equal normalised strings (spaces dropped, lowercased) match. Otherwise both are read as numbers
   (`parse_number`, a small exact parser: integers, decimals, thousands commas, + - * / ^, brackets,
   `\\frac`, `\\sqrt`, `\\pi`, `\\cdot`, `\\times`, `\\div`; a trailing unit word may follow). Two exact
   rationals must be equal; when either side is inexact (a decimal, a root or pi) they match within
   a relative 1e-6.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Sequence

from jaxplay.evaluation import statistics
from jaxplay.text import answers

Number = Fraction | float  # Fraction: exact rational; float: a decimal, root or pi was involved.

RELATIVE_TOLERANCE = 1e-6
GSM8K_MARK = "####"
MAX_EXACT_BITS = 4096  # Exact powers larger than this are computed in floating point.

_WRAPPERS = ("\\text", "\\textbf", "\\textit", "\\textrm", "\\mathrm", "\\mathbf", "\\mbox",
             "\\boxed", "\\fbox")
_DELETED = ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\ ", "\\quad", "\\qquad", "~",
            "^{\\circ}", "^\\circ", "\\circ", "\\degree", "°", "\\$", "$", "\\%", "%")
_THOUSANDS = re.compile(r"(?<![\d.])\d{1,3}(?:,\d{3})+(?![\d,])")
_UNIT = re.compile(r"(.*?[\d}.)])\s*([a-zA-Z][a-zA-Z\s/^\d.\-]*)")
_TOKEN = re.compile(r"\s*(\d+\.?\d*|\.\d+|\\[a-zA-Z]+|[-+*/^(){}\[\]])")


def reference_answer(reference: str) -> str:
  """Final answer of a reference: last `\\boxed{}`, else the text after `####`, else all of it."""
  boxed = answers.boxed_content(reference)
  if boxed is not None:
    return boxed.strip()
  if GSM8K_MARK in reference:
    return reference.rsplit(GSM8K_MARK, 1)[1].strip()
  return reference.strip()


def _unwrap(answer: str, command: str) -> str:
  """Replaces every `command{...}` by its content (balanced braces)."""
  opening = command + "{"
  while (start := answer.find(opening)) >= 0:
    depth, end = 1, start + len(opening)
    while end < len(answer) and depth:
      depth += (answer[end] == "{") - (answer[end] == "}")
      end += 1
    closing = end - 1 if depth == 0 else end  # Unclosed: only the command goes.
    answer = answer[:start] + answer[start + len(opening):closing] + answer[end:]
  return answer


def normalise(answer: str) -> str:
  """Canonical text of an answer (rule 3 in the module docstring)."""
  answer = answer.replace("\u2212", "-").replace("{,}", ",")
  answer = re.sub(r"\\[dt]frac", r"\\frac", answer)
  for command in _WRAPPERS:
    answer = _unwrap(answer, command)
  for deleted in _DELETED:
    answer = answer.replace(deleted, " " if deleted.startswith("\\") else "")
  if answer.count("=") == 1:
    answer = answer.split("=")[1]
  answer = answer.strip().rstrip(".").strip()
  answer = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", answer)
  return re.sub(r"\\sqrt(\d)", r"\\sqrt{\1}", answer)


class _Parser:
  """Recursive descent over tokens; every method returns a Number or raises ValueError."""

  def __init__(self, answer: str):
    answer = _THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), answer).rstrip()
    self.tokens, position = [], 0
    while position < len(answer):
      match = _TOKEN.match(answer, position)
      if not match:
        raise ValueError(answer[position:])
      self.tokens.append(match.group(1))
      position = match.end()
    self.i = 0

  def peek(self) -> str | None:
    return self.tokens[self.i] if self.i < len(self.tokens) else None

  def take(self, expected: str | None = None) -> str:
    token = self.peek()
    if token is None or (expected is not None and token != expected):
      raise ValueError(f"expected {expected}, got {token}")
    self.i += 1
    return token

  def parse(self) -> Number:
    value = self.expression()
    if self.peek() is not None:
      raise ValueError(self.peek())
    return value

  def expression(self) -> Number:
    value = self.term()
    while self.peek() in ("+", "-"):
      value = value + self.term() if self.take() == "+" else value - self.term()
    return value

  def term(self) -> Number:
    value = self.unary()
    while True:
      token = self.peek()
      if token in ("*", "\\cdot", "\\times"):
        self.take()
        value = value * self.unary()
      elif token in ("/", "\\div"):
        self.take()
        value = _divide(value, self.unary())
      elif token in ("(", "\\sqrt", "\\pi"):  # Implicit product: 2\sqrt{3}, 3\pi, 2(5).
        value = value * self.power()
      else:
        return value

  def unary(self) -> Number:
    if self.peek() in ("-", "+"):
      return -self.unary() if self.take() == "-" else self.unary()
    return self.power()

  def power(self) -> Number:
    base = self.atom()
    if self.peek() == "^":
      self.take()
      return _power(base, self.unary())
    return base

  def atom(self) -> Number:
    token = self.take()
    closing = {"(": ")", "{": "}", "[": "]"}
    if token in closing:
      value = self.expression()
      self.take(closing[token])
      return value
    if token == "\\frac":
      numerator = self.braced()
      return _divide(numerator, self.braced())
    if token == "\\sqrt":
      return _sqrt(self.braced())
    if token == "\\pi":
      return math.pi
    if token[0].isdigit() or token[0] == ".":
      return float(token) if "." in token else Fraction(int(token))
    raise ValueError(token)

  def braced(self) -> Number:
    self.take("{")
    value = self.expression()
    self.take("}")
    return value


def _divide(a: Number, b: Number) -> Number:
  if b == 0:
    raise ValueError("division by zero")
  return a / b


def _power(base: Number, exponent: Number) -> Number:
  if isinstance(base, Fraction) and isinstance(exponent, Fraction) and exponent.denominator == 1:
    if abs(exponent) * math.log2(abs(base.numerator) + base.denominator) <= MAX_EXACT_BITS:
      return base ** int(exponent)  # ZeroDivisionError for 0^-n is caught by parse_number.
  if base < 0 and not float(exponent).is_integer():
    raise ValueError("fractional power of a negative number")
  try:
    return math.pow(float(base), float(exponent))
  except (OverflowError, ValueError) as error:
    raise ValueError("power") from error


def _sqrt(value: Number) -> Number:
  if value < 0:
    raise ValueError("negative root")
  if isinstance(value, Fraction):
    top, bottom = math.isqrt(value.numerator), math.isqrt(value.denominator)
    if top * top == value.numerator and bottom * bottom == value.denominator:
      return Fraction(top, bottom)
  return math.sqrt(value)


def parse_number(answer: str) -> Number | None:
  """Value of a normalised numeric answer, or None if it is not one (never uses eval)."""
  candidates = [answer]
  unit = _UNIT.fullmatch(answer)
  if unit and (len(unit.group(2).split()[0]) > 1 or answer[len(unit.group(1))].isspace()):
    candidates.append(unit.group(1))  # "5 dollars", "12cm" -> the number; "5x" stays.
  for candidate in candidates:
    try:
      value = _Parser(candidate).parse()
    except (ValueError, OverflowError, ZeroDivisionError):
      continue
    if isinstance(value, Fraction) or math.isfinite(value):
      return value
  return None


def answers_match(predicted: str, reference: str) -> bool:
  """Whether two final answers are equal after normalisation (rule 4)."""
  predicted, reference = normalise(predicted), normalise(reference)
  if not predicted:
    return False
  if "".join(predicted.lower().split()) == "".join(reference.lower().split()):
    return True
  a, b = parse_number(predicted), parse_number(reference)
  if a is None or b is None:
    return False
  if isinstance(a, Fraction) and isinstance(b, Fraction):
    return a == b
  return math.isclose(float(a), float(b), rel_tol=RELATIVE_TOLERANCE)


def grade(response: str, reference: str) -> bool:
  """Whether the last boxed answer of `response` matches the reference's final answer."""
  predicted = answers.boxed_content(response)
  return predicted is not None and answers_match(predicted, reference_answer(reference))


def summarise(correct: Sequence[bool], lengths: Sequence[int]) -> dict[str, float]:
  """Accuracy over all samples with its 95% Wilson interval, and the mean response length."""
  samples = len(correct)
  hits = int(sum(bool(c) for c in correct))
  low, high = statistics.wilson_interval(hits, samples)
  return {"samples": samples, "correct": hits, "accuracy": hits / samples if samples else 0.0,
          "accuracy_low": low, "accuracy_high": high,
          "mean_response_length": float(sum(lengths) / len(lengths)) if lengths else 0.0}
