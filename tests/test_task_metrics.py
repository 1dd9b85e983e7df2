"""The eval hook through which a task adds metrics (`Task.metrics` / `sample_metrics`): per-problem
means over samples with NaN left out, and precision/recall/F1 from X_tp/X_fp/X_fn counts. Used by
critic_arith (GUI-Critic-R1's verdict F1 and suggestion validity)."""
from types import SimpleNamespace

from rlrecipes.evaluate import evaluate, mean_ci, reported, summarize
from rlrecipes.tasks.base import Task


class Verdicts(Task):
    """Two-item toy task for the eval hook: rows give the label, a sample is the verdict."""
    metrics = ("v_tp", "v_fp", "v_fn", "hit", "only_b")

    def sample_metrics(self, completion, row):
        pos = completion == "yes"
        return {"v_tp": float(pos and row["label"]), "v_fp": float(pos and not row["label"]),
                "v_fn": float(not pos and row["label"]), "hit": float(pos == row["label"]),
                "only_b": 1.0 if row["name"] == "b" else float("nan")}


def test_task_metrics_hook_means_counts_and_f1():
    rows = [{"prompt": "a", "answer": "x", "label": True, "name": "a"},
            {"prompt": "b", "answer": "x", "label": False, "name": "b"}]
    said = ["yes", "yes", "no", "yes",     # item a (positive): tp tp fn tp
            "yes", "no", "no", "no"]       # item b (negative): fp, three true negatives

    def fake_generate(model, tokenizer, prompts, gen, device, repeat):
        return SimpleNamespace(texts=said[:len(prompts) * repeat], stats={})
    values = evaluate(None, None, Verdicts(), rows, ["a", "b"], 4, None, "cpu", generate_fn=fake_generate)
    assert values["hit"] == [0.75, 0.75] and values["v_tp"] == [0.75, 0.0]
    out = summarize(values)
    # tp 3, fp 1, fn 1 over the 8 samples: precision 3/4, recall 3/4, F1 = 6 / (6 + 1 + 1)
    assert (out["v_precision"], out["v_recall"], out["v_f1"]) == (0.75, 0.75, 0.75)
    assert out["only_b"] == 1.0 and out["hit"] == 0.75            # NaN (item a) is left out
    assert "v_tp" not in out
    assert set(out) == set(reported([1], 4, False, task_metrics=Verdicts.metrics))


def test_mean_ci_leaves_nan_out():
    assert mean_ci([1.0, float("nan"), 0.0])[0] == 0.5
    m, ci = mean_ci([float("nan")])
    assert m != m and ci != ci
