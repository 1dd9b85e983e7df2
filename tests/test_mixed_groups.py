"""Mixed-prompt groups (issue 19 mechanism 3; Info-consistent GRPO, arXiv 2512.12858): the
stability / helpfulness rewards on the spec's worked groups (papers/next/info_consistent_grpo.md
§7), the `paraphrase_groups` sampler's layout and state, the loop's per-row prompts (folded
repeats for the fast engine, prefix sharing by identical prompt), eval's consistency@K, and an
exact resume of a run with mixed groups."""
import json
import math
from types import SimpleNamespace

import pytest
import torch

from rlrecipes.config import Generation, load_recipe
from rlrecipes.errors import UserError
from rlrecipes.evaluate import evaluate, summarize, variant_names
from rlrecipes.logprobs import token_logprobs
from rlrecipes.registry import get
from rlrecipes.rewards.info_consistency import (group_entropy, info_helpfulness, info_stability, info_set,
                                                stability)
from rlrecipes.rollout.engine import fast_generate
from rlrecipes.rollout.generate import completion_mask, encode_prompts, generate
from rlrecipes.rollout.paraphrase import ParaphraseGroups, step_prompts
from rlrecipes.rollout.samplers import Uniform
from rlrecipes.run import train
from rlrecipes.tasks.paraphrase import ArithParaphrase
from rlrecipes.tiny import build_model, build_tokenizer

from .conftest import FAST, train_and_resume


def _ans(*items):
    return f"<answer>{', '.join(items)}</answer>"


# ---- rewards: the spec's §7 numbers -------------------------------------------------------------

def test_multi_item_group_worked_by_hand():
    # I = [{a,b}, {a,b}, {a,c}], M = 4. f = {a: 1, b: 2/3, c: 1/3}.
    # s_1 = (1/3)[a in, f_-1(a)=2/2 + b in, f_-1(b)=1/2 + c out, 1 - f_-1(c)=1/2] = 2/3 (s_2 the same);
    # s_3 = (1/3)[a: 1 + b out, 1 - 2/2 = 0 + c in, f_-3(c)=0] = 1/3
    done = [_ans("a", "b"), _ans("b", "a"), _ans("a", "c")]
    assert info_stability(None, done, group_size=3, extract="items") == pytest.approx([2 / 3, 2 / 3, 1 / 3])
    # H_grp = (h2(1) + h2(2/3) + h2(1/3)) / 3 = (0 + 0.918296 + 0.918296) / 3
    assert group_entropy([info_set(c, "items") for c in done]) == pytest.approx(0.612197, abs=1e-6)
    # helpfulness = log(1 + 2) / log(1 + 4) for every member
    assert info_helpfulness(None, done, catalogue_size=4, extract="items") == pytest.approx([0.682606] * 3, abs=1e-6)
    # r = 0.5 h + 0.5 s = [0.674636, 0.674636, 0.507970]; GRPO (unbiased std, eps 1e-4)
    r = torch.tensor([[0.5 * 0.682606 + 0.5 * s for s in (2 / 3, 2 / 3, 1 / 3)]])
    adv = get("advantage", "grpo")(r, scale="group", eps=1e-4)
    assert adv[0].tolist() == pytest.approx([0.5768, 0.5768, -1.1535], abs=1e-4)


def test_single_answer_groups():
    # answers 85, 85, 75, 85: each 85 agrees with 2 of the 3 others, the 75 with none (spec §7)
    done = [_ans("85"), _ans("85"), _ans("75"), _ans("85")]
    assert info_stability(None, done, group_size=4) == pytest.approx([2 / 3, 2 / 3, 0.0, 2 / 3])
    # two groups of two are scored apart: [85, 85] agree fully, [75, none] share nothing
    assert info_stability(None, [_ans("85"), _ans("85"), _ans("75"), "no tags"], group_size=2) == [1.0, 1.0, 0.0, 0.0]
    # self included (loo false): 85 -> f(85) = 3/4 on U = {85, 75}: (3/4 + 1 - 1/4) / 2 = 0.75
    assert stability([info_set(c) for c in done], loo=False)[0] == pytest.approx(0.75)
    # silence is not consistency: a group with no answers scores 0; a group of one has no others
    assert info_stability(None, ["x", "y"], group_size=2) == [0.0, 0.0]
    assert info_stability(None, [_ans("85")], group_size=1) == [None]
    # one answer, M = 1: helpfulness 1 for an answer, 0 for none
    assert info_helpfulness(None, [_ans("85"), "none"]) == [1.0, 0.0]
    with pytest.raises(UserError, match="extract"):
        info_stability(None, done, group_size=4, extract="facts")


# ---- the sampler ---------------------------------------------------------------------------------

ROWS = [{"variants": [f"q{i}v{k}" for k in range(4)]} for i in range(6)]


def test_group_layout_is_variant_blocks():
    s = ParaphraseGroups(num_rows=6, seed=0, samples_per_variant=2)
    groups = s.group_prompts(ROWS[:2], group_size=8)
    assert groups[0] == ["q0v0", "q0v0", "q0v1", "q0v1", "q0v2", "q0v2", "q0v3", "q0v3"]
    assert ParaphraseGroups(6, 0).group_prompts(ROWS[:1], 4) == [["q0v0", "q0v1", "q0v2", "q0v3"]]  # m = G / K
    with pytest.raises(UserError, match="group_size is 6"):
        s.group_prompts(ROWS[:1], group_size=6)
    with pytest.raises(UserError, match="no 'variants' column"):
        s.group_prompts([{"prompt": "1+1="}], group_size=8)


def test_fewer_variants_are_a_seeded_draw_and_round_trip():
    a = ParaphraseGroups(num_rows=6, seed=3, variants=1)   # the control: G samples of one phrasing
    first = [a.group_prompts([r], 4)[0] for r in ROWS]
    assert all(len(set(g)) == 1 for g in first)
    assert len({g[0][-2:] for g in first}) > 1            # the phrasing varies from group to group
    a.next(4)
    state = a.state_dict()
    b = ParaphraseGroups(num_rows=6, seed=3, variants=1)
    b.load_state_dict(state)
    assert a.next(5) == b.next(5)
    assert [a.group_prompts([r], 4) for r in ROWS] == [b.group_prompts([r], 4) for r in ROWS]


def test_step_prompts_fold_equal_runs_into_repeat():
    rows = ROWS[:2]
    fmt = lambda texts, rows: [f"<{t}>" for t in texts]   # noqa: E731  (a chat template stand-in)
    prompts, repeat = step_prompts(ParaphraseGroups(6, 0, samples_per_variant=2), rows, None, 8, fmt)
    assert repeat == 2 and prompts == [f"<q{i}v{k}>" for i in range(2) for k in range(4)]
    # one sample per variant: every row its own prompt
    assert step_prompts(ParaphraseGroups(6, 0), rows, None, 4, fmt)[1] == 1
    # equal phrasings ("7+7=" both ways) merge into a longer run; the fold still reproduces each row
    same = [{"variants": ["7+7=", "7+7=", "add 7 and 7:", "what?"]}]
    prompts, repeat = step_prompts(ParaphraseGroups(1, 0, samples_per_variant=2), same, None, 8, fmt)
    assert [p for p in prompts for _ in range(repeat)] == fmt([v for v in same[0]["variants"] for _ in range(2)], None)
    # a plain sampler: each training row's prompt, G times
    assert step_prompts(Uniform(6, 0), rows, ["p0", "p1"], 8, fmt) == (["p0", "p1"], 8)


# ---- generation and the log-prob forward with mixed groups ----------------------------------------

def test_fast_engine_rows_keep_their_own_prompts():
    tok = build_tokenizer()
    model = build_model(tok, seed=1).eval()
    prompts, repeat = ["12+34=", "34+12=", "add 12 and 34:"], 2
    gen = Generation(max_new_tokens=6, top_k=1)   # deterministic: equal to per-row generation
    ours = fast_generate(model, tok, prompts, gen, "cpu", repeat=repeat)
    rows = generate(model, tok, [p for p in prompts for _ in range(repeat)], gen, "cpu", repeat=1)
    assert tok.batch_decode([ids[m.bool()] for ids, m in zip(ours.prompt_ids_NP, ours.prompt_mask_NP)]) == \
        [p for p in prompts for _ in range(repeat)]
    assert torch.equal(ours.completion_ids_NT, rows.completion_ids_NT) and ours.texts == rows.texts


def test_prefix_sharing_packs_a_mixed_group_by_prompt():
    """A mixed group is several packed sequences (one per distinct prompt); log-probs equal the
    plain forward's."""
    tok = build_tokenizer()
    model = build_model(tok, seed=1)
    group = ["12+34=", "12+34=", "34+12=", "34+12=", "add 12 and 34:", "add 12 and 34:", "12+34=", "what?"]
    ids, mask = encode_prompts(tok, group, "cpu")
    comp = torch.randint(20, 60, (8, 5), generator=torch.Generator().manual_seed(0))
    comp[1, 2] = comp[5, 0] = tok.eos_token_id
    cmask = completion_mask(comp, tok.eos_token_id)
    plain, _ = token_logprobs(model, ids, mask, comp, cmask, share_prefix=False)
    shared, _ = token_logprobs(model, ids, mask, comp, cmask, share_prefix=True)
    torch.testing.assert_close(shared, plain * cmask, atol=1e-5, rtol=1e-5)


# ---- eval ------------------------------------------------------------------------------------------

def test_consistency_at_k_worked_by_hand():
    task = ArithParaphrase(templates=["{a}+{b}=", "{b}+{a}=", "add {a} and {b}:"])
    assert tuple(variant_names(3)) == task.metrics == ("consistency@3", "h_grp", "acc_v0", "acc_v1", "acc_v2")
    rows = task.synthetic("test", 2, seed=0, test_size=10)
    a, b = rows[0]["a"] + rows[0]["b"], rows[1]["a"] + rows[1]["b"]
    # problem 0: right in every phrasing; problem 1: right, right, wrong (one of three disagrees)
    answers = {v: a for v in rows[0]["variants"]} | dict(zip(rows[1]["variants"], [b, b, b + 1]))

    def fake_generate(model, tok, prompts, gen, device, repeat=1):
        texts = [_ans(str(answers.get(p.strip("[]"), a))) for p in prompts for _ in range(repeat)]
        return SimpleNamespace(texts=texts, stats={})
    values = evaluate(None, None, task, rows, [task.prompt(r) for r in rows], 2, None, "cpu",
                      generate_fn=fake_generate, format_fn=lambda texts, rows: [f"[{t}]" for t in texts])
    assert values["consistency@3"] == [1.0, 0.0]
    # problem 1: f = {b: 2/3, b+1: 1/3}: H = (h2(2/3) + h2(1/3)) / 2 = 0.918296
    assert values["h_grp"] == pytest.approx([0.0, 0.918296], abs=1e-6)
    assert (values["acc_v0"], values["acc_v2"]) == ([1.0, 1.0], [1.0, 0.0])
    assert summarize(values)["consistency@3"] == 0.5
    with pytest.raises(ValueError, match="format_fn"):
        evaluate(None, None, task, rows, [task.prompt(r) for r in rows], 2, None, "cpu", generate_fn=fake_generate)


def test_task_rows_and_prompts():
    task = ArithParaphrase()
    train_rows = task.synthetic("train", 400, seed=0, test_size=50)
    share = sum(r["template"] == 0 for r in train_rows) / len(train_rows)
    assert 0.78 < share < 0.92                                      # weights 0.85 / 0.05 x 3
    r = train_rows[0]
    assert r["variants"] == [f"{r['a']}+{r['b']}=", f"{r['b']}+{r['a']}=", f"add {r['a']} and {r['b']}:",
                             f"what is {r['a']} plus {r['b']}?"] and r["prompt"] == r["variants"][r["template"]]
    assert [r["template"] for r in task.synthetic("test", 8, seed=0, test_size=50)] == [0, 1, 2, 3] * 2
    with pytest.raises(ValueError, match="weights"):
        ArithParaphrase(weights=[1.0, 0.0])


# ---- the loop ----------------------------------------------------------------------------------------

SEEN: list[list[str]] = []


def record_prompts(prompts, completions, group_size, **columns):
    """A reward that keeps the prompts it was given, group by group."""
    SEEN.extend(prompts[i:i + group_size] for i in range(0, len(prompts), group_size))
    return [0.0] * len(completions)


def _overrides(*extra):
    fast = [o for o in FAST if not o.startswith(("rewards=", "train.group_size"))]
    return fast + ["train.group_size=8", "algorithm.sampler.samples_per_variant=2", "eval.at_start=false",
                   "eval.at_end=false", "rewards=[{fn: info_stability, weight: 0.5}, {fn: info_helpfulness, weight: 0.5}, "
                   "{fn: 'tests.test_mixed_groups:record_prompts', weight: 0.0}]", *extra]


def test_rewards_see_each_group_of_paraphrases(tmp_path):
    SEEN.clear()
    train(load_recipe("recipes/info_consistent.yaml", "tiny", _overrides()), str(tmp_path / "run"), say=lambda *a: None)
    assert len(SEEN) == 2 * 4                             # 2 steps x 4 groups
    for group in SEEN:
        assert group[0::2] == group[1::2]                 # 2 samples of each phrasing, in blocks
        assert len(set(group)) == 4 and "+" in group[0] and group[4].startswith("add ")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in rows if "loss" in r)


def test_fast_engine_and_prefix_sharing_train_mixed_groups_as_the_plain_path(tmp_path):
    """Mixed groups through the fast engine, with and without the shared-prefix forward: the same
    losses (the packing is by identical prompt, so each phrasing is its own packed sequence)."""
    losses = []
    for share in ("false", "true"):
        r = load_recipe("recipes/info_consistent.yaml", "tiny", _overrides("generation.engine=fast", "model.dtype=float32",
                                                                           f"train.prefix_sharing={share}"))
        train(r, str(tmp_path / share), say=lambda *a: None)
        rows = [json.loads(line) for line in (tmp_path / share / "metrics.jsonl").read_text().splitlines()]
        losses.append([v for m in rows if "loss" in m for v in (m["loss"], m["kl"], m["reward_mean"])])
    assert len(losses[0]) == 6
    assert losses[0] == pytest.approx(losses[1], abs=1e-4)


def test_resume_with_mixed_groups_is_exact(tmp_path):
    """The sampler's order and variant draws round-trip through the checkpoint: steps 3-4 of a run
    resumed at step 2 equal the uninterrupted run's."""
    overrides = _overrides("algorithm.sampler.variants=2", "algorithm.sampler.samples_per_variant=4",
                           "train.steps=4", "checkpoint.every=2", "checkpoint.keep_last=5")
    full, cut = train_and_resume(load_recipe("recipes/info_consistent.yaml", "tiny", overrides), tmp_path, cut_at=4)
    step = lambda d: {r["step"]: r for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())  # noqa: E731
                      if "loss" in r}
    a, b = step(full), step(cut)
    assert sorted(b) == [1, 2, 3, 4]
    for s in (3, 4):
        for key in ("loss", "reward_mean", "reward/info_stability"):
            assert a[s][key] == b[s][key], (s, key)
