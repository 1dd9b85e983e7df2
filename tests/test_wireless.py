"""The `wireless` task: WirelessMathBench-XL jsonl through the real loader, the benchmark's
prompt layout, and synthetic items whose answers the verifier accepts."""
import json

from rlrecipes.config import DataConfig
from rlrecipes.tasks.loaders import load_splits
from rlrecipes.tasks.wireless import Wireless

ROWS = [
    {"problem_id": "p1", "paper_id": "x", "type": "fill_blank_50", "background": "A two-branch receiver.",
     "question_text": "Fill both blanks.", "equation": "y = [MASK] x + [MASK]", "options": None,
     "correct_answer": "\\boxed{h}, \\boxed{n}", "prompt": "unused"},
    {"problem_id": "p2", "paper_id": "x", "type": "MCQ", "background": "Capacity.",
     "question_text": "Which one?", "equation": "", "options": {"A": "B", "B": "B \\log_2(1+SNR)", "C": "1", "D": "0"},
     "correct_answer": "B", "prompt": "unused"},
]


def test_benchmark_jsonl_loads_with_a_field_mapping(tmp_path):
    path = tmp_path / "S0_test_public.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS * 3))
    data = DataConfig(task="wireless", source={"path": str(path), "test_path": str(path)},
                      fields={"answer": "correct_answer"}, test_size=2)
    task = Wireless()
    train, test = load_splits(data, task, seed=0)
    fill, mcq = test
    assert task.prompt(fill) == (
        "**Background**\nA two-branch receiver.\n\n**Question**\nFill both blanks.\n\n**Equation**\n"
        "$$y = [MASK] x + [MASK]$$\n---\nPlease solve this problem step by step. Fill in the [MASK] "
        "placeholder(s) in the equation. Your final answer should be given at the end in the format: "
        "\\boxed{answer1}, \\boxed{answer2} (for the 2 blanks in order)\n")
    assert "**Options**\nA: B\nB: B \\log_2(1+SNR)\nC: 1\nD: 0\n---\n" in task.prompt(mcq)
    assert "\\boxed{X} where X is the letter" in task.prompt(mcq)
    assert task.score("so \\boxed{h}, \\boxed{n}", fill) == 1.0 and task.score("\\boxed{n}, \\boxed{h}", fill) == 0.0
    assert task.score("\\boxed{B}", mcq) == 1.0 and task.score("\\boxed{A}", mcq) == 0.0
    assert task.check(task.extract("\\boxed{h} \\boxed{n}"), fill) == 1.0  # maj@k votes


def test_synthetic_items_have_computed_answers_the_verifier_accepts():
    task = Wireless()
    rows = task.synthetic("train", 300, seed=0)
    assert {r["type"] for r in rows} == {"fill_blank_1", "fill_blank_2", "MCQ", "numeric"}
    assert all(task.score(task.gold(r), r) == 1.0 for r in rows)
    shannon = [r for r in rows if r["type"] == "numeric" and r["question_text"].startswith("B = ")]
    for r in shannon:  # C = B log2(1 + SNR), computed: e.g. B = 2, SNR = 15 -> 8
        b, snr = (int(t.split()[0].rstrip(".")) for t in r["question_text"][4:].split("SNR = "))
        assert int(r["answer"]) == b * {1: 1, 3: 2, 7: 3, 15: 4}[snr]
    mcq = [r for r in rows if r["type"] == "MCQ"]
    assert len({r["answer"] for r in mcq}) > 1  # the right option moves
