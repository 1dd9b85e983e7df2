"""Multi-turn tool rollouts (issue 8): the turn loop with a scripted model, observation tokens
masked out of the loss, the tool sandboxes, OTC-PO's reward table and the `tool_arith` task."""

import pytest
import torch

from rlrecipes.config import Generation, load_recipe
from rlrecipes.registry import get, register
from rlrecipes.rewards.otc import otc_tool_factor
from rlrecipes.rollout.multiturn import ToolRollouts
from rlrecipes.schema import ToolUse
from rlrecipes.tasks.tool_arith import ToolArith
from rlrecipes.tiny import build_tokenizer

from .conftest import FAST

TOK = build_tokenizer()


class ScriptedModel:
    """Stands in for a causal LM: each sequence's next turn is chosen by what its context holds."""
    training = False

    def __init__(self, script):
        self.script = script   # (context text) -> continuation text

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def generate(self, input_ids, attention_mask, max_new_tokens, pad_token_id, eos_token_id, **kw):
        stops = eos_token_id if isinstance(eos_token_id, list) else [eos_token_id]
        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
            context = TOK.decode([t for t, m in zip(ids, mask) if m], skip_special_tokens=False)
            new = TOK(self.script(context), add_special_tokens=False)["input_ids"] + [TOK.eos_token_id]
            stop = next(k for k, t in enumerate(new) if t in stops)   # as HF: a stop token ends the row
            rows.append(ids + new[:stop + 1][:max_new_tokens])
        width = max(len(r) for r in rows)
        return torch.tensor([r + [pad_token_id] * (width - len(r)) for r in rows])


def script(context: str) -> str:
    if context.startswith("loop"):
        return "<search>k</search>"
    if "<information>" in context:
        return "<answer>" + context.rsplit("<information>", 1)[1].split("</information>")[0] + "</answer>"
    if context.startswith("direct"):
        return "<answer>3</answer>"
    return "<search>k</search>never seen"   # text after the call tag is cut


def test_turns_run_the_tool_and_mask_its_tokens():
    spec = ToolUse(tool={"fn": "lookup", "path": None}, max_turns=2)
    spec.tool = type(spec.tool)(fn="lookup")
    rollouts = ToolRollouts(spec, task=ToolArith())
    rollouts.tool.kb["k"] = "17"
    r = rollouts(ScriptedModel(script), TOK, ["k+1=", "direct 1+2=", "loop"], Generation(max_new_tokens=60), "cpu")
    assert r.texts[0] == "<search>k</search><information>17</information><answer>17</answer>"
    assert r.texts[1] == "<answer>3</answer>"
    assert r.stats["calls"].tolist() == [1, 0, 3] and r.stats["turns"].tolist() == [2, 1, 3]
    assert r.truncated_N.tolist() == [False, False, True]   # the looping one ended without EOS
    # the observation "<information>17</information>" (4 tokens) is context but not loss
    ids, loss, attn = r.completion_ids_NT[0], r.loss_mask()[0], r.completion_mask_NT[0]
    info = [i for i, t in enumerate(ids.tolist()) if t in TOK.convert_tokens_to_ids(["<information>", "</information>"])]
    assert loss[info[0]:info[1] + 1].tolist() == [0] * 4 and attn[info[0]:info[1] + 1].tolist() == [1] * 4
    assert loss.sum() == attn.sum() - 4 and r.stats["obs_tokens"][0] == 4
    # max_turns = 2: two results, the third call ends the sequence
    assert r.texts[2].count("<information>") == 2


def test_turn_cut_when_the_pad_token_is_eos():
    from rlrecipes.rollout.multiturn import _turn
    ends_in_call = lambda toks: toks[-1:] == [7]   # noqa: E731  (7 closes a call)
    assert _turn([5, 7, 1, 1], eos=1, pad=1, is_call=ends_in_call) == ([5, 7], False)   # padding after a call
    assert _turn([5, 6, 1, 1], eos=1, pad=1, is_call=ends_in_call) == ([5, 6, 1], True)  # a real EOS
    assert _turn([5, 7, 0, 0], eos=1, pad=0, is_call=ends_in_call) == ([5, 7], False)


def test_token_budget_counts_observations():
    spec = ToolUse(tool={"fn": "lookup"}, max_turns=4)
    r = ToolRollouts(spec, task=ToolArith())(ScriptedModel(lambda c: "<search>k</search>"), TOK, ["loop"],
                                              Generation(max_new_tokens=5), "cpu")
    assert r.completion_mask_NT.sum() == 5   # 3 sampled + 2 of the observation, then the budget is spent


captured = []


@register("loss", "_mask_spy")
def _mask_spy(logp_NT, old_logp_NT, adv_N, mask_NT, ids_NT):
    captured.append((ids_NT.clone(), mask_NT.clone()))
    return -(logp_NT * adv_N.unsqueeze(-1)), {}


def test_the_loop_gives_losses_the_sampled_tokens_only(tmp_path, monkeypatch):
    from rlrecipes.run import train
    made = []
    original = ToolRollouts.__call__
    monkeypatch.setattr(ToolRollouts, "__call__", lambda self, *a, **k: made.append(original(self, *a, **k)) or made[-1])
    r = load_recipe("recipes/otc_po.yaml", "tiny", FAST[:1] + ["train.steps=1", "train.prompts_per_step=4",
                    "train.group_size=4", "eval.at_start=false", "eval.at_end=false", "generation.max_new_tokens=24",
                    "algorithm.loss={fn: _mask_spy, aggregation: token_mean}"])
    captured.clear()
    train(r, str(tmp_path / "run"), say=lambda *a: None)
    rollout = made[0]   # the RL step's rollout; its mini-batches reach the loss in order
    ids, mask = torch.cat([c[0] for c in captured]), torch.cat([c[1] for c in captured])
    assert rollout.stats["obs_tokens"].sum() > 0, "the SFT model made no tool call; the check would be empty"
    assert torch.equal(ids, rollout.completion_ids_NT)
    assert torch.equal(mask, rollout.loss_mask().float())          # what the loss sees
    observed = (rollout.completion_mask_NT == 1) & (rollout.loss_mask() == 0)
    assert observed.sum() == rollout.stats["obs_tokens"].sum()     # exactly the tool's tokens are left out


def test_calculator_is_bounded_and_never_evals():
    calc = get("tool", "calculator")()
    assert calc("(3+4)*2") == "14" and calc("7/2") == "3.5" and calc("2**10") == "1024"
    assert calc("2**1000").startswith("error") and calc("1/0") == "error: division by zero"
    assert calc("__import__('os').system('echo hi')").startswith("error: unsupported")
    assert calc("9" * 300).startswith("error")


def test_otc_reward_tables_from_the_spec():
    assert [round(otc_tool_factor(m, 0), 4) for m in range(6)] == [1, 0.5, 0.309, 0.2225, 0.1736, 0.1423]
    assert [round(otc_tool_factor(m, 1), 4) for m in range(6)] == [0, 1, 0.866, 0.7071, 0.5878, 0.5]
    assert [round(otc_tool_factor(m, 2), 4) for m in range(6)] == [0, 0.866, 1, 0.9511, 0.866, 0.7818]
    otc = get("reward", "otc")
    call = "<search>q</search>"
    group = [call * 3 + "<answer>1</answer>", call * 2 + "<answer>1</answer>", "<answer>2</answer>",
             call * 5 + "<answer>1</answer>"]   # (correct, m) = (1,3), (1,2), (0,0), (1,5): n = 2
    assert otc(None, group, answer=["1"] * 4, group_size=4) == pytest.approx([0.9511, 1, 0, 0.7818], abs=1e-4)
    assert otc(None, group, answer=["9"] * 4, group_size=4) == [0, 0, 0, 0]   # all wrong
    # PPO variant: n = 0 for every completion -> cos(m pi / (2m + 1))
    assert otc(None, group[:2], answer=["1", "1"], group_size=2, variant="ppo") == pytest.approx([0.2225, 0.309], abs=1e-4)


def test_tool_arith_rows_gold_and_knowledge():
    task = ToolArith(overcall=1.0)
    train, test = task.synthetic("train", 400, seed=0), task.synthetic("test", 100, seed=0)
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
    hard = next(r for r in train if r["difficulty"] == "hard")
    value = task.values[hard["key"]]
    assert task.gold(hard) == f"<search>{hard['key']}</search><information>{value}</information><answer>{hard['answer']}</answer>"
    easy = next(r for r in train if r["difficulty"] == "easy")
    assert task.gold(easy).startswith(f"<search>{easy['key']}</search><information>{easy['key']}</information>")
    assert ToolArith(overcall=0.0).gold({**easy, "sft_call": False}) == f"<answer>{easy['answer']}</answer>"
    assert sum(r["difficulty"] == "hard" for r in train) == 200
