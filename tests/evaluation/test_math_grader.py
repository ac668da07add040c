"""Math grader: a hand-written table of tricky answers, reference extraction, the number parser."""

import builtins
from fractions import Fraction

import pytest

from jaxplay.evaluation import math_grader

# (response, reference, expected verdict), each verdict decided by hand.
CASES = [
    ("So she makes \\boxed{18} dollars.", "She makes 9 * 2 = $18.\n#### 18", True),
    ("\\boxed{1,000}", "1000", True),
    ("\\boxed{1000}", "#### 1,000", True),
    ("\\boxed{\\$1,450,000}", "#### 1,450,000", True),
    ("\\boxed{1{,}000}", "1000", True),
    ("\\boxed{1,5}", "15", False),  # Not a thousands separator.
    ("\\boxed{\\frac{1}{2}}", "0.5", True),
    ("\\boxed{\\dfrac{3}{4}}", "\\frac{3}{4}", True),
    ("\\boxed{\\tfrac{3}{4}}", "0.75", True),
    ("\\boxed{\\frac34}", "3/4", True),
    ("\\boxed{1.5}", "\\frac{3}{2}", True),
    ("\\boxed{-\\frac{2}{3}}", "-2/3", True),
    ("\\boxed{\\frac{-2}{3}}", "-\\frac{2}{3}", True),
    ("\\boxed{\\left(\\frac{1}{2}\\right)}", "1/2", True),
    ("\\boxed{-5}", "-5", True),
    ("\\boxed{5}", "-5", False),
    ("\\boxed{\u22125}", "-5", True),  # Unicode minus sign.
    ("\\boxed{5 dollars}", "5", True),
    ("\\boxed{18 \\text{ eggs}}", "18", True),
    ("\\boxed{12 \\text{cm}^2}", "12", True),
    ("\\boxed{5x}", "5", False),  # A variable, not a unit.
    ("\\boxed{5.}", "5", True),
    ("The answer is $\\boxed{42}$.", "#### 42\n", True),
    ("\\boxed{\\$18.00}", "18", True),
    ("\\boxed{50\\%}", "50", True),
    ("\\boxed{\\text{18}}", "18", True),
    ("\\boxed{x = 7}", "7", True),
    ("First \\boxed{3}, on reflection \\boxed{4}.", "4", True),  # The last box counts.
    ("First \\boxed{4}, on reflection \\boxed{3}.", "4", False),
    ("The answer is 18.", "18", False),  # No box.
    ("\\boxed{}", "18", False),
    ("Cut off: \\boxed{18", "18", False),  # Unclosed last box.
    ("\\boxed{\\boxed{7}}", "7", True),
    ("\\boxed{336^\\circ}", "336^\\circ", True),  # AIME 2025 II problem 5's reference.
    ("\\boxed{336}", "336^\\circ", True),
    ("\\boxed{337}", "336^\\circ", False),
    ("\\boxed{2^{10}}", "1024", True),
    ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}", True),
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "0.8660254", True),  # Within 1e-6 relative.
    ("\\boxed{3\\pi}", "9.42477796", True),
    ("\\boxed{0.333}", "\\frac{1}{3}", False),
    ("\\boxed{0.3333333333}", "\\frac{1}{3}", True),
    ("\\boxed{1000001}", "1000000", False),  # Integers compare exactly.
    ("\\boxed{\\frac{1}{0}}", "1", False),
    ("\\boxed{\\text{Monday}}", "monday", True),
    ("\\boxed{(1, 2)}", "(1,2)", True),
    ("\\boxed{__import__('os').getcwd()}", "0", False),
    ("\\boxed{9^{9^{9}}}", "1", False),  # Huge power: rejected, no hang.
    ("so $\\boxed{\\dfrac{7}{2}}$", "Thus the total is \\boxed{3.5}.", True),  # Boxed reference.
]


@pytest.mark.parametrize("response,reference,expected", CASES)
def test_grade_table(response, reference, expected):
  assert math_grader.grade(response, reference) is expected


def test_table_has_enough_cases():
  assert len(CASES) >= 30 and {c[2] for c in CASES} == {True, False}


def test_grader_never_calls_eval(monkeypatch):
  def forbidden(*args, **kwargs):
    raise AssertionError("eval called")
  monkeypatch.setattr(builtins, "eval", forbidden)
  monkeypatch.setattr(builtins, "exec", forbidden)
  for response, reference, expected in CASES:
    assert math_grader.grade(response, reference) is expected


@pytest.mark.parametrize("reference,final", [
    ("Janet sells 16 - 3 - 4 = 9 eggs.\n#### 18", "18"),
    ("a #### b\n#### 70,000", "70,000"),
    ("Hence \\boxed{\\frac{1}{2}} and #### 3", "\\frac{1}{2}"),
    ("  588 ", "588"),
])
def test_reference_answer(reference, final):
  assert math_grader.reference_answer(reference) == final


@pytest.mark.parametrize("answer,value", [
    ("1,234,567", Fraction(1234567)),
    ("-\\frac{3}{4}", Fraction(-3, 4)),
    ("2^-2", Fraction(1, 4)),
    ("(1+2)*3-4/2", Fraction(7)),
    ("\\sqrt{4/9}", Fraction(2, 3)),  # Perfect squares stay exact.
    ("2(3+4)", Fraction(14)),
    ("10 km/h", Fraction(10)),
    ("0.25", 0.25),
])
def test_parse_number(answer, value):
  parsed = math_grader.parse_number(answer)
  assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize("answer", ["x", "5x", "1,5", "\\frac{1}{0}", "(-8)^{1/3}", "1 2", "",
                                    "\\sqrt{-1}", "0^{-1}", "2^{2^{2^{2^{2}}}}"])
def test_parse_number_rejects(answer):
  assert math_grader.parse_number(answer) is None


def test_summarise_hand_computed():
  stats = math_grader.summarise([True] * 8 + [False] * 2, [10, 20] * 5)
  assert stats["samples"] == 10 and stats["correct"] == 8 and stats["accuracy"] == 0.8
  # Wilson, p=0.8, n=10, z=1.96: centre 0.99208/1.38416, half 1.96*sqrt(0.016+0.009604)/1.38416.
  assert stats["accuracy_low"] == pytest.approx(0.49016, abs=1e-4)
  assert stats["accuracy_high"] == pytest.approx(0.94331, abs=1e-4)
  assert stats["mean_response_length"] == 15.0
