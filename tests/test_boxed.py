"""WirelessMathLM's boxed-answer reward (arXiv 2509.23219): the spec's cases (named.md §5 Tests)
and our own."""
from rlrecipes.rewards.boxed import boxed_answer, boxed_contents, score_boxed


def test_nested_braces_are_matched_not_regexed():
    text = r"so R = \boxed{\frac{R_L r_i}{R_L + r_i}} and then \boxed{2}"
    assert boxed_contents(text) == [r"\frac{R_L r_i}{R_L + r_i}", "2"]
    assert boxed_contents(r"\boxed{\frac{1}{2}") == []  # unclosed: nothing


def test_spec_cases():
    assert score_boxed(r"... \boxed{a}, \boxed{b}", r"\boxed{a}, \boxed{b}") == 1.0
    assert score_boxed(r"... \boxed{b}, \boxed{a}", r"\boxed{a}, \boxed{b}") == 0.0  # order matters
    assert score_boxed(r"the answer is \boxed{B}", "B") == 1.0
    assert score_boxed(r"\boxed{\frac{1}{2}}", "0.5") == 1.0  # symbolic through math-verify


def test_own_cases():
    assert score_boxed(r"\boxed{(b)}", "B") == 1.0 and score_boxed(r"\boxed{C}", "B") == 0.0
    assert score_boxed(r"\boxed{\frac{r_i R_L}{r_i + R_L}}", r"\frac{R_L r_i}{R_L + r_i}") == 1.0
    assert score_boxed(r"\boxed{ \log_2 ( 1 + \mathrm{SNR} ) }", r"\log_2(1+\mathrm{SNR})") == 1.0
    assert score_boxed(r"\boxed{a}", r"\boxed{a}, \boxed{b}") == 0.0  # a blank missing
    assert score_boxed(r"first \boxed{9}, finally \boxed{a}, \boxed{b}", r"\boxed{a}, \boxed{b}") == 1.0
    assert score_boxed("no box at all: 2", "2") == 0.0
    assert score_boxed(r"\boxed{3}", "2") == 0.0
    assert boxed_answer(None, [r"\boxed{2}", r"\boxed{x+}"], answer=["2", "x+1"]) == [1.0, 0.0]
