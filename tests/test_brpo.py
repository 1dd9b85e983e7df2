"""AnytimeReasoner / BRPO (arXiv 2505.13438): the advantage math against the numbers the spec
computed by running the authors' own `compute_cot_advantage` / `compute_summary_advantage`
(shared/papers/next/anytime_reasoner_brpo.md §7), the budget rollouts (cuts, shared prompts,
pooled baselines, score gating), the branch-row contract of the loop, the anytime eval, and an
exact resume of the tiny recipe."""
import json

import pytest
import torch

from rlrecipes.algorithms.brpo import brpo, budget_prior, summary_advantages, think_advantages
from rlrecipes.branches import Branches, join, step_inputs, this_rank
from rlrecipes.errors import UserError
from rlrecipes.rollout.budget import BudgetSummaries, Thoughts
from rlrecipes.rollout.generate import Rollout
from rlrecipes.tiny import build_tokenizer

from .conftest import FAST, RECIPES, train_and_resume

TOK = build_tokenizer()


def close(a, b):
    assert torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                          atol=1e-6), (a, b)


# --- advantages: the spec's worked examples (§7) ---------------------------------------------

def test_example_1_every_variance_reduction():
    r = torch.tensor([[[0.0, 1.0], [1.0, 1.0]]])
    p = torch.tensor([0.5, 0.5])
    close(think_advantages(r, p, "brpo")[0], [[-0.25, 0.25], [0.25, 0.0]])
    close(think_advantages(r, p, "v2only")[0], [[-0.25, 0.0], [0.25, 0.0]])
    close(think_advantages(r, p, "v1only")[0], [[0.5, 0.5], [1.0, 0.0]])
    close(think_advantages(r, p, "none")[0], [[0.5, 0.5], [1.0, 0.5]])
    # A = 1: the summary baseline is the mean over the two traces at each budget
    score = torch.tensor([0.0, 1.0, 1.0, 1.0])          # (trace, split) = (0,0) (0,1) (1,0) (1,1)
    slot = torch.tensor([0, 1, 0, 1])
    close(summary_advantages(score, torch.arange(4), slot, torch.zeros(4, dtype=torch.long), 1, 2),
          [-0.5, 0.0, 0.5, 0.0])


def test_example_2_uniform_and_linear_prior():
    r = torch.tensor([[[0.0, 0.5, 1.0], [0.5, 1.0, 1.0]]])
    close(think_advantages(r, budget_prior("uniform", 3))[0],
          [[-0.166667, 0.111111, 0.148148], [0.166667, 0.166667, 0.037037]])
    close(think_advantages(r, torch.tensor([16.0, 32.0, 48.0]) / 96)[0],
          [[-0.125, 0.166667, 0.222222], [0.125, 0.194444, 0.055556]])
    close(budget_prior("linear", 3), [16 / 96, 32 / 96, 48 / 96])   # b_j ∝ j + 1 on an equal grid


def _example(trace1_slots, trace1_scores):
    """Scores, parents, slots of the spec's examples 2/3: G = 2, S = 3, A = 2 (one prompt)."""
    slots = [0, 0, 1, 1, 2, 2] + trace1_slots
    scores = [0, 0, 0, 1, 1, 1] + trace1_scores
    parent = [0] * 6 + [1] * 6
    return torch.tensor(scores, dtype=torch.float32), torch.tensor(parent), torch.tensor(slots)


def test_example_2_summary_advantages():
    score, parent, slot = _example([0, 0, 1, 1, 2, 2], [1, 0, 1, 1, 1, 1])
    pool = parent * 3 + slot                                   # one prompt per (trace, budget)
    close(summary_advantages(score, pool, slot, parent // 2, 2, 3),
          [0, 0, -0.5, 0.5, 0, 0, 0.5, -0.5, 0, 0, 0, 0])


def test_example_3_merged_budgets_through_the_estimator():
    """Trace 1 finished before b_1: budgets 1 and 2 share one prompt with 4 summaries (spread
    over the two budgets in order); its baseline pools all four; segment 2 of trace 1 is empty."""
    score, parent, _ = _example([0, 0, 1, 1, 1, 1], [1, 0, 1, 1, 1, 0])
    slot = torch.tensor([0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2])     # the merged four spread over 1, 2
    pool = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4, 4])
    cut = torch.tensor([2, 2, 4, 4, 6, 6, 2, 2, 3, 3, 3, 3])     # trace 0: 6 tokens; trace 1: 3
    mask = torch.tensor([[[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]]])
    adv_BGT, adv_M = brpo(torch.zeros(1, 2), mask, score, parent, slot, pool, cut)
    A = [[-0.083333, 0.166667, 0.175926], [0.083333, 0.055556, -0.101852]]
    close(adv_BGT[0, 0], [A[0][0]] * 2 + [A[0][1]] * 2 + [A[0][2]] * 2)
    close(adv_BGT[0, 1], [A[1][0]] * 2 + [A[1][1]] + [0, 0, 0])    # trace 1's split 2 reaches no token
    close(adv_M[6:], [0.5, -0.5, 0.25, 0.25, 0.25, -0.75])
    close(adv_M[:6], [0, 0, -0.5, 0.5, 0, 0])


def test_example_4_one_summary_per_budget():
    r = torch.tensor([[[0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]])
    close(think_advantages(r, budget_prior("uniform", 2))[0], [[0, 0.333333], [0.5, 0.083333], [-0.5, -0.166667]])
    score = r.reshape(-1)
    slot = torch.tensor([0, 1] * 3)
    close(summary_advantages(score, torch.arange(6), slot, torch.zeros(6, dtype=torch.long), 1, 2),
          [-1 / 3, 1 / 3, 2 / 3, 1 / 3, -1 / 3, -2 / 3])


def test_grpo_baseline_is_mean_centred_without_std():
    """prior base + one budget + A = 1 + v2only: A = r - mean(r) (the authors' GRPO)."""
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0, 1.0]])
    close(think_advantages(r.unsqueeze(-1), budget_prior("base", 1), "v2only")[..., 0], r - r.mean())
    close(summary_advantages(r[0], torch.arange(5), torch.zeros(5, dtype=torch.long),
                             torch.zeros(5, dtype=torch.long), 1, 1), r[0] - r.mean())


def test_summary_method_grpo_trains_only_the_last_budget_and_lone_prompts_get_baseline_0():
    score = torch.tensor([1.0, 0.0, 1.0])
    adv = summary_advantages(score, torch.tensor([0, 1, 1]), torch.tensor([0, 1, 1]),
                             torch.zeros(3, dtype=torch.long), 2, 2, "grpo")
    close(adv, [0.0, -0.5, 0.5])
    close(summary_advantages(score, torch.tensor([0, 1, 1]), torch.tensor([0, 1, 1]),
                             torch.zeros(3, dtype=torch.long), 2, 2), [1.0, -0.5, 0.5])


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="variance_reduction"):
        think_advantages(torch.zeros(1, 2, 2), budget_prior("uniform", 2), "std")
    with pytest.raises(ValueError, match="prior"):
        budget_prior([0.5, 0.6], 2)
    with pytest.raises(ValueError, match="splits"):
        BudgetSummaries(4, 0, splits=[8, 8])


# --- budget rollouts -------------------------------------------------------------------------

def _rollout(prompts, completions):
    """A Rollout of tiny-tokenizer texts (completions right-padded, EOS as written)."""
    enc = [TOK.encode(c, add_special_tokens=False) for c in completions]
    T = max(map(len, enc))
    ids = torch.tensor([e + [TOK.pad_token_id] * (T - len(e)) for e in enc])
    mask = torch.tensor([[1] * len(e) + [0] * (T - len(e)) for e in enc])
    p = [TOK.encode(x, add_special_tokens=False) for x in prompts]
    P = max(map(len, p))
    pids = torch.tensor([[TOK.pad_token_id] * (P - len(e)) + e for e in p])
    pmask = torch.tensor([[0] * (P - len(e)) + [1] * len(e) for e in p])
    return Rollout(pids, pmask, ids, mask, list(completions), torch.zeros(len(enc), dtype=torch.bool))


def test_thoughts_cut_after_close_at_budget_or_eos():
    ro = _rollout(["1+2=", "1+2=", "1+2="], ["<think>1+2=3</think><answer>3</answer><eos>",
                                            "<think>abcdefghij", "<think>ab<eos>"])
    th = Thoughts(ro, TOK, [TOK.convert_tokens_to_ids("</think>")], max_len=8)
    assert [len(t) for t in th.ids] == [7, 8, 4] and th.closed == [True, False, False] and th.eos == [False, False, True]
    assert TOK.decode(th.ids[0]) == "<think>1+2=3</think>"


def test_requests_share_one_prompt_past_a_finished_thought():
    """Budgets [2, 4, 8], A = 2: a 7-token closed thought is cut at 2 and 4 and summarised whole
    at 8; a 3-token one is cut at 2 and shares its whole-thought prompt between 4 and 8 (4
    samples); the markers are the code's truncation + </think> + cue."""
    s = BudgetSummaries(4, 0, splits=[2, 4, 8], n_summary=2, truncation="...", cue="=")
    ro = _rollout(["Q:", "Q:"], ["<think>1+2=3</think>", "<think>x</think>"])
    th = Thoughts(ro, TOK, [TOK.convert_tokens_to_ids("</think>")], 8)
    reqs = s.requests(["Q:", "Q:"], th, TOK, [2, 4, 8], 2)
    texts = [r[0] for r in reqs]
    assert texts[:6] == ["Q:<think>1...</think>="] * 2 + ["Q:<think>1+2...</think>="] * 2 + ["Q:<think>1+2=3</think>="] * 2
    assert texts[6:] == ["Q:<think>x...</think>="] * 2 + ["Q:<think>x</think>="] * 4
    assert [r[3] for r in reqs] == [2, 2, 4, 4, 7, 7, 2, 2, 3, 3, 3, 3]


class _Batch:
    """What refine reads of a Batch, with a scripted summary generator and the accuracy rule."""

    def __init__(self, rollout, summaries):
        from rlrecipes.rollout.samplers import Batch
        self.asked = []

        def generate(prompts, max_new_tokens=None):
            self.asked.append((prompts, max_new_tokens))
            return _rollout(prompts, summaries[:len(prompts)])

        def score(prompts, ro, rows):
            return torch.tensor([[float(t.startswith(f"<answer>{r['answer']}</answer>"))] for t, r in zip(ro.texts, rows)])
        self.batch = Batch(step=1, group_size=2, rows=[{"answer": "3"}] * 2, rollout=rollout,
                           rewards_NK=torch.zeros(2, 1), weights=[1.0], generate=generate, score=score,
                           format=None, pad_id=TOK.pad_token_id, question_of=None, tokenizer=TOK)


def test_refine_attaches_scored_branches_and_gates_spoiled_summaries():
    s = BudgetSummaries(4, 0, splits=[3, 8], n_summary=2, summary_max_tokens=10, truncation="...", cue="")
    ro = _rollout(["1+2=", "1+2="], ["<think>1+2=3</think><answer>3</answer><eos>", "<think>1+<eos>"])
    ok, bad = "<answer>3</answer><eos>", "<answer>3</answer></think><eos>"
    # trace 0: cut at 3 (2 summaries) then whole at 8 (2); trace 1 ended with EOS: all score 0
    b = _Batch(ro, [ok, bad, ok, ok, ok, ok, ok, ok]).batch
    s.refine(b)
    br = b.branches
    assert b.rollout.texts == ["<think>1+2=3</think>", "<think>1+"] and b.rollout.completion_mask_NT.sum(1).tolist() == [7, 4]
    assert br.parent_M.tolist() == [0, 0, 0, 0, 1, 1, 1, 1] and br.slot_M.tolist() == [0, 0, 1, 1, 0, 0, 1, 1]
    assert br.cut_M.tolist() == [3, 3, 7, 7, 3, 3, 4, 4] and br.pool_M.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert br.rewards_MK[:, 0].tolist() == [1, 0, 1, 1, 0, 0, 0, 0]     # extra </think>; EOS thought
    assert b.rewards_NK[:, 0].tolist() == [1.0, 0.0]                     # the last budget's mean
    assert b.metrics["budget/acc@3"] == 0.25 and b.metrics["budget/acc@8"] == 0.5
    assert b.metrics["budget/eos_frac"] == 0.5


# --- the loop's branch rows ------------------------------------------------------------------

class _Acc:
    num_processes, process_index = 1, 0


def test_branch_inputs_join_and_slices():
    parents = _rollout(["a", "a"], ["<think>12", "<think>1"])
    kids = _rollout(["a<think>1", "a<think>1", "a<think>"], ["<answer>1</answer><eos>", "<eos>", "x<eos>"])
    br = Branches(kids, torch.tensor([0, 0, 1]), torch.tensor([0, 0, 0]), torch.tensor([0, 0, 1]),
                  torch.tensor([2, 2, 1]), torch.tensor([[1.0], [0.0], [float("nan")]]))
    inputs, counts = step_inputs(_Acc(), br, [2.0], rows_per_rank=2)
    assert counts == [3] and inputs["branch_parent_M"].tolist() == [0, 0, 1]
    assert inputs["branch_rewards_M"][:2].tolist() == [2.0, 0.0] and torch.isnan(inputs["branch_rewards_M"][2])
    adv_M = this_rank(torch.tensor([0.5, -0.5, 0.0, 9.0]), [3, 1], 0)
    both, adv, rew = join(parents, torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.0, 0.0]]), torch.tensor([1.0, 0.0]), br,
                          adv_M, [2.0], TOK.pad_token_id)
    assert len(both) == 5 and adv.shape == (5, both.completion_ids_NT.shape[1])
    close(adv[2, :4], [0.5] * 4)           # a branch's advantage on every one of its tokens
    close(adv[3], [-0.5] + [0.0] * (adv.shape[1] - 1))
    assert rew[:4].tolist() == [1.0, 0.0, 2.0, 0.0]


def _recipe(extra=()):
    from rlrecipes.config import load_recipe
    return load_recipe(RECIPES / "brpo.yaml", "tiny", list(extra))


def test_brpo_and_budget_summaries_come_together():
    from rlrecipes.trainer import Components
    with pytest.raises(UserError, match="algorithm.sampler.fn"):
        Components(_recipe(["algorithm.sampler={fn: uniform}"]), 4)
    with pytest.raises(UserError, match="algorithm.advantage.fn"):
        Components(_recipe(["algorithm.advantage={fn: grpo}"]), 4)
    with pytest.raises(UserError, match="algorithm.loss.fn"):
        Components(_recipe(["algorithm.loss.fn=gspo"]), 4)
    comp = Components(_recipe(), 4)
    assert comp.branches and comp.token_level


def test_anytime_eval_scores_one_summary_per_thought_and_budget():
    from rlrecipes.schema import Generation
    from rlrecipes.tasks.arith import Arith
    s = BudgetSummaries(4, 0, splits=[3, 8], n_summary=2, truncation="...", cue="")

    def generate_fn(model, tok, prompts, gen, device, repeat=1):
        if gen.max_new_tokens == 8:      # thoughts: one closes at 7 tokens, one is cut at 8
            return _rollout([p for p in prompts for _ in range(repeat)], ["<think>1+2=3</think>", "<think>abcdefgh"] * len(prompts))
        return _rollout(prompts, ["<answer>3</answer>" if "3</think>" in p else "<answer>4</answer>" for p in prompts])
    rows = [{"prompt": "1+2=", "answer": "3", "a": 1, "b": 2}]
    out = s.evaluate(None, TOK, Arith(), rows, ["1+2="], 2, Generation(max_new_tokens=8), "cpu", generate_fn)
    assert out == {"budget_acc@3": [0.0], "budget_acc@8": [0.5], "anytime_acc": [0.25], "think_len": [7.5]}


def test_arith_preamble_golds():
    from rlrecipes.tasks.arith import Arith
    t = Arith(max_operand=49, preamble_frac=0.5)
    rows = t.synthetic("train", 400, 0)
    with_pre = [r for r in rows if r["preamble"]]
    assert 0.4 < len(with_pre) / len(rows) < 0.6
    assert t.gold(with_pre[0]).startswith("<think>hmm, let me see.") and t.score(t.gold(with_pre[0]), with_pre[0]) == 1.0
    assert Arith().gold({"a": 47, "b": 38}) == "<think>7+8=15;4+3+1=8</think><answer>85</answer>"


def test_tiny_recipe_resumes_exactly(tmp_path):
    """The sampler's state (its prompt order) and the summaries' sampling (the global RNG) come
    back from a checkpoint: a resumed run repeats the uninterrupted run's later steps."""
    r = _recipe(FAST + ["train.steps=3", "checkpoint.every=1", "eval.at_start=false", "eval.at_end=false",
                        "rewards=[{fn: accuracy}, {fn: 'tests.user_rewards:parity_reward', weight: 1.0}]"])
    full, cut = train_and_resume(r, tmp_path, cut_at=3)
    lines = [[json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()] for run in (full, cut)]
    keep = lambda row: {k: v for k, v in row.items() if not k.startswith(("time/", "step_time", "gen_tokens"))}  # noqa: E731
    assert [keep(x) for x in lines[0]] == [keep(x) for x in lines[1]]
    assert "budget/acc@8" in lines[0][-1]


def test_accuracy_vs_budget_plot(tmp_path):
    from rlrecipes import plots
    rows = [{"step": 0, "eval/budget_acc@8": 0.1, "eval/budget_acc@16": 0.3, "eval/budget_acc@16_ci": 0.1,
             "eval/anytime_acc": 0.2},
            {"step": 80, "eval/budget_acc@8": 0.2, "eval/budget_acc@16": 0.5, "eval/anytime_acc": 0.35}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    written = plots.draw(tmp_path)
    assert tmp_path / "plots" / "anytime.png" in written and (tmp_path / "plots" / "anytime.png").stat().st_size > 0
