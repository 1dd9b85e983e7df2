"""TempSamp-R1 (arXiv 2509.18056; papers/next/tempsamp_r1.md): the span task's IoU, the soft
reward shaping and the spec's worked group (shaping turns A_GT 1.04 vs a good on-policy 0.56
into a near tie 0.762 vs 0.755), the anchoring ablation, and GT injection into every group."""
import math

import pytest
import torch

from rlrecipes.algorithms.advantages import grpo
from rlrecipes.algorithms.tempsamp import tempsamp_anchor
from rlrecipes.registry import get
from rlrecipes.rewards.interval import interval_format, interval_iou, soft_shape
from rlrecipes.rollout.generate import Rollout
from rlrecipes.rollout.samplers import Batch
from rlrecipes.rollout.tempsamp import GTInjection, skewness
from rlrecipes.tasks.span import Span, iou, parse_interval
from rlrecipes.tiny import build_tokenizer


def test_iou_on_inclusive_cells():
    # gold [6, 10] (5 cells); [8, 12]: inter 8..10 = 3, union 6..12 = 7
    assert iou((8, 12), 6, 10) == pytest.approx(3 / 7)
    assert iou((6, 10), 6, 10) == 1.0
    assert iou((11, 14), 6, 10) == 0.0            # touching, no shared cell
    assert iou((10, 6), 6, 10) == 0.0 and iou(None, 6, 10) == 0.0   # reversed / unparsable
    assert iou((10, 10), 6, 10) == pytest.approx(1 / 5)
    assert parse_interval("<answer>6 to 10</answer>") == (6, 10)
    assert parse_interval("<answer>x</answer><answer> [6, 10] </answer>") == (6, 10)   # the last block
    assert parse_interval("<answer>6 to</answer>") is None and parse_interval("6 to 10") is None


def test_soft_shape_matches_the_spec_values():
    # tempsamp_r1.md §7, tau 0.8, alpha1 0.01, alpha2 1:
    # r >= tau: 0.8 + 0.01 ln(r - 0.8 + 1); r < tau: 0.8 - (e^(0.8 - r) - 1) / (e - 1)
    want = {1.0: 0.801823, 0.9: 0.800953, 0.8: 0.8, 0.79: 0.794151, 0.5: 0.596390, 0.3: 0.422459, 0.0: 0.086764}
    for r, v in want.items():
        assert soft_shape(r) == pytest.approx(v, abs=1e-6)
    # continuous at tau and increasing
    assert soft_shape(0.8 - 1e-9) == pytest.approx(0.8, abs=1e-8)
    xs = [i / 100 for i in range(101)]
    assert all(soft_shape(a) < soft_shape(b) for a, b in zip(xs, xs[1:]))


def _group(ious):
    # gold [0, 99]: a prediction [0, 100 v - 1] has IoU v exactly
    comps = [f"<answer>0 to {round(100 * v) - 1}</answer>" for v in ious]
    n = len(ious)
    return comps, [0] * n, [99] * n


def test_worked_group_shaping_ties_the_good_answer_with_the_gt():
    # tempsamp_r1.md §7: G = 4, last = GT, IoU [0.30, 0.55, 0.85, 1.0], format 1, r = iou + 0.1 fmt,
    # A = (r - mean) / (unbiased std + 1e-6)
    comps, s, e = _group([0.30, 0.55, 0.85, 1.0])
    fmt = interval_format(None, comps)
    assert fmt == [1.0] * 4
    raw = torch.tensor([[v + 0.1 * f for v, f in zip(interval_iou(None, comps, s, e), fmt)]])
    assert raw[0].tolist() == pytest.approx([0.40, 0.65, 0.95, 1.10], abs=1e-6)
    assert grpo(raw, eps=1e-6)[0].tolist() == pytest.approx([-1.2010, -0.4003, 0.5604, 1.0408], abs=1e-4)
    shaped = torch.tensor([[v + 0.1 * f for v, f in zip(interval_iou(None, comps, s, e, shape=True), fmt)]],
                          dtype=torch.float64)
    assert shaped[0].tolist() == pytest.approx([0.522459, 0.734704, 0.900488, 0.901823], abs=1e-6)
    adv = grpo(shaped, eps=1e-6)[0]
    assert adv.tolist() == pytest.approx([-1.3493, -0.1679, 0.7549, 0.7623], abs=1e-4)
    # the good on-policy answer (IoU 0.85) was at about half the GT's advantage; now a near tie
    assert adv[3] - adv[2] < 0.01


def test_worked_sparse_group_and_anchoring():
    # §7 sparse case IoU [0.05, 0.10, 0.20, 1.0]: raw A [-0.6445, -0.5325, -0.3083, 1.4853],
    # shaped A [-0.7463, -0.5433, -0.1665, 1.4561] (the low rewards spread apart)
    comps, s, e = _group([0.05, 0.10, 0.20, 1.0])
    raw = torch.tensor([[v + 0.1 for v in interval_iou(None, comps, s, e)]], dtype=torch.float64)
    shaped = torch.tensor([[v + 0.1 for v in interval_iou(None, comps, s, e, shape=True)]], dtype=torch.float64)
    assert grpo(raw, eps=1e-6)[0].tolist() == pytest.approx([-0.6445, -0.5325, -0.3083, 1.4853], abs=1e-4)
    assert grpo(shaped, eps=1e-6)[0].tolist() == pytest.approx([-0.7463, -0.5433, -0.1665, 1.4561], abs=1e-4)
    # anchoring, §7: on-policy r = [0.40, 0.65, 0.95] alone -> A = [-0.9684, -0.0605, 1.0289],
    # A_GT = 1.2 x 1.0289 = 1.2347
    adv = tempsamp_anchor(torch.tensor([[0.40, 0.65, 0.95, 1.10]]), slot=-1, lambda_off=1.2)
    assert adv[0].tolist() == pytest.approx([-0.9684, -0.0605, 1.0289, 1.2347], abs=1e-4)
    # slot 0 is the same math on a permuted group; tied on-policy rows give 0 everywhere
    adv0 = tempsamp_anchor(torch.tensor([[1.10, 0.40, 0.65, 0.95]]), slot=0)
    assert adv0[0].tolist() == pytest.approx([1.2347, -0.9684, -0.0605, 1.0289], abs=1e-4)
    assert tempsamp_anchor(torch.tensor([[0.1, 0.1, 0.1, 1.1]])).abs().max() == 0
    with pytest.raises(ValueError, match="G >= 3"):
        tempsamp_anchor(torch.tensor([[0.0, 1.0]]))


def test_span_task_rows_gold_and_metrics():
    task = Span(length=24, events=2)
    train, test = task.synthetic("train", 300, seed=0), task.synthetic("test", 200, seed=0)
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
    for row in train[:50]:
        q, cells = row["prompt"][0], row["prompt"][2:-1]
        assert len(cells) == 24 and row["prompt"] == f"{q}|{cells}="
        s, e = row["start"], row["end"]
        assert set(cells[s:e + 1]) == {q} and (s == 0 or cells[s - 1] != q) and (e == 23 or cells[e + 1] != q)
        assert 3 <= e - s + 1 <= 8 and task.score(task.gold(row), row) == 1.0
    row = {"prompt": "x|......xxxxx.............=", "start": 6, "end": 10}
    assert task.gold(row) == "<answer>6 to 10</answer>"
    # [8, 12]: IoU 3/7 = 0.43 -> no hit at 0.5; [7, 10]: 4/5 = 0.8 -> hit at 0.5 and 0.7
    assert task.sample_metrics("<answer>8 to 12</answer>", row) == pytest.approx(
        {"miou": 3 / 7, "r1_05": 0.0, "r1_07": 0.0})
    assert task.sample_metrics("<answer>7 to 10</answer>", row) == {"miou": 0.8, "r1_05": 1.0, "r1_07": 1.0}
    assert task.extract("<answer>[7, 10]</answer>") == "7 to 10" and task.check("7 to 10", row) == 1.0
    assert task.check(None, row) == 0.0
    from rlrecipes.errors import UserError
    with pytest.raises(UserError, match="tau"):
        interval_iou(None, ["<answer>1 to 2</answer>"], [1], [2], shape=True, tau=1.5)
    with pytest.raises(ValueError, match="raise length"):
        Span(length=10, events=2, max_run=8)
    assert get("task", "span") is Span and get("sampler", "gt_injection") is GTInjection


TOK = build_tokenizer()
ROWS = [{"prompt": "a|aaa...=", "start": 0, "end": 2}, {"prompt": "b|...bbb=", "start": 3, "end": 5}]


def _score(prompts, rollout, rows):
    s, e = [r["start"] for r in rows], [r["end"] for r in rows]
    return torch.tensor([interval_iou(prompts, rollout.texts, s, e), interval_format(prompts, rollout.texts)]).T


def _batch(completions, G, step=1):
    rows = [r for r in ROWS for _ in range(G)]
    prompts = [r["prompt"] for r in rows]
    enc = TOK(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    ids = [TOK(c, add_special_tokens=False)["input_ids"] + [TOK.eos_token_id] for c in completions]
    T = max(map(len, ids))
    rollout = Rollout(enc["input_ids"], enc["attention_mask"],
                      torch.tensor([i + [TOK.pad_token_id] * (T - len(i)) for i in ids]),
                      torch.tensor([[1] * len(i) + [0] * (T - len(i)) for i in ids]), list(completions),
                      torch.zeros(len(ids), dtype=torch.bool))
    return Batch(step=step, group_size=G, rows=rows, rollout=rollout, rewards_NK=_score(prompts, rollout, rows),
                 weights=[1.0, 0.1], generate=None, score=_score, format=lambda qs, rows=None: list(qs),
                 pad_id=TOK.pad_token_id, question_of=lambda row: row["prompt"], reward_names=["iou", "format"],
                 tokenizer=TOK, gold_of=Span().gold)


def test_gt_injection_fills_the_last_slot_of_every_group():
    # group 1 (gold [0, 2]): IoU [1/3, 0, 1] -> slot 2 becomes the gold; group 2 (gold [3, 5]): [1, 0, 2/3]
    comps = ["<answer>0 to 0</answer>", "junk", "<answer>0 to 2</answer>",
             "<answer>3 to 5</answer>", "<answer>0 to 1</answer>", "<answer>4 to 5</answer>"]
    batch = _batch(comps, G=3)
    GTInjection(num_rows=2, seed=0).refine(batch)
    assert batch.injected == [2, 5]
    assert batch.rollout.texts[2] == "<answer>0 to 2</answer>" and batch.rollout.texts[5] == "<answer>3 to 5</answer>"
    assert batch.rollout.texts[:2] == comps[:2] and batch.rollout.texts[3:5] == comps[3:5]
    assert batch.rewards_NK[:, 0].tolist() == pytest.approx([1 / 3, 0.0, 1.0, 1.0, 0.0, 1.0])
    m = batch.metrics
    # totals: group 1 [1/3 + 0.1, 0, 1.1], group 2 [1.1, 0.1, 1.1]; on-policy mean (0.4333 + 0 + 1.1 + 0.1) / 4
    assert m["gt/reward"] == pytest.approx(1.1) and m["gt/onpolicy_reward_mean"] == pytest.approx(1.6333 / 4, abs=1e-4)
    # group 1: mean 0.5111 -> rows 0, 1 negative; group 2: mean 0.7667 -> row 4 negative, row 3 positive
    assert m["gt/onpolicy_neg_adv_frac"] == 0.75
    assert math.isfinite(m["gt/adv_skew"])
    # slot 0, and nothing before start_step
    batch = _batch(comps, G=3)
    GTInjection(num_rows=2, seed=0, slot=0).refine(batch)
    assert batch.injected == [0, 3]
    batch = _batch(comps, G=3, step=4)
    GTInjection(num_rows=2, seed=0, start_step=5).refine(batch)
    assert batch.injected == [] and batch.rollout.texts == comps
    with pytest.raises(ValueError, match="outside a group"):
        GTInjection(num_rows=2, seed=0, slot=3).refine(_batch(comps, G=3))


def test_skewness_sign():
    # [0, 0, 0, 3]: mean 0.75, deviations [-0.75 x3, 2.25]; m2 = 1.6875, m3 = (3 (-0.4219) + 11.39) / 4 = 2.5313
    # skew = 2.5313 / 1.6875^1.5 = 1.1547 (one high outlier: positive skew)
    assert skewness(torch.tensor([0.0, 0.0, 0.0, 3.0])) == pytest.approx(1.1547, abs=1e-4)
    assert skewness(torch.tensor([0.0, 3.0, 3.0, 3.0])) == pytest.approx(-1.1547, abs=1e-4)
    assert math.isnan(skewness(torch.ones(3)))
