"""The learned reward-model component (rewards/reward_model.py), the rm stage (rm.py) and the
safe_arith task's aspect labels (Safe-MOGRPO, arXiv 2503.21819)."""
import json
import math
import random

import pytest
import torch

from rlrecipes.algorithms.advantages import gdpo, grpo
from rlrecipes.config import Reward, load_recipe
from rlrecipes.errors import UserError
from rlrecipes.rewards import reward_model as rmod
from rlrecipes.rewards.combine import RewardFn, combine
from rlrecipes.rm import bradley_terry, masked_mse, run_rm
from rlrecipes.tasks.base import extract_answer
from rlrecipes.tasks.polar_arith import ArithReference, answer_of, polar_finetune, polar_pretrain, write
from rlrecipes.tasks.safe_arith import ASPECTS, SafeArith, aspects, safe_arith_aspects
from rlrecipes.tiny import build_tokenizer

LABELS = list(ASPECTS)


@pytest.fixture(autouse=True)
def on_cpu(monkeypatch):
    """The reward model runs in bf16 on CUDA; these comparisons are fp32 on the CPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def save_classifier(path, num_labels=4, pad_token_id=None):
    """A randomly initialised tiny Qwen2 sequence classifier and the character tokenizer."""
    from transformers import Qwen2Config, Qwen2ForSequenceClassification
    tok = build_tokenizer()
    config = Qwen2Config(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, intermediate_size=64, num_labels=num_labels,
                         pad_token_id=tok.pad_token_id if pad_token_id is None else pad_token_id,
                         max_position_embeddings=256)
    torch.manual_seed(0)
    model = Qwen2ForSequenceClassification(config)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    rmod._MODELS.clear()
    rmod._LAST.clear()
    return model.eval(), tok


@pytest.fixture
def tiny_rm(tmp_path):
    """A randomly initialised 4-head tiny Qwen2 sequence classifier saved like an rm stage's."""
    from transformers import Qwen2Config, Qwen2ForSequenceClassification
    tok = build_tokenizer()
    config = Qwen2Config(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, intermediate_size=64, num_labels=4,
                         pad_token_id=tok.pad_token_id, max_position_embeddings=256)
    torch.manual_seed(0)
    model = Qwen2ForSequenceClassification(config)
    path = tmp_path / "rm-model"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    (path / rmod.META).write_text(json.dumps({"labels": LABELS, "template": "{prompt}|{completion}"}))
    rmod._MODELS.clear()
    rmod._LAST.clear()
    return model.eval(), tok, path


def direct(model, tok, texts):
    """Logits computed one text at a time, no padding: what the reward must return."""
    with torch.no_grad():
        return torch.cat([model(input_ids=torch.tensor([tok(t, add_special_tokens=False)["input_ids"]])).logits
                          for t in texts])


def test_each_head_is_its_logit_column_and_one_forward_serves_all_heads(tiny_rm, monkeypatch):
    model, tok, path = tiny_rm
    prompts, comps = ["1+2=", "!40+5="], ["<answer>3</answer>", "ok.<think>x</think><answer>no</answer>"]
    expected = direct(model, tok, [f"{p}|{c}" for p, c in zip(prompts, comps)])   # the saved template
    calls = []
    real = rmod.scores
    monkeypatch.setattr(rmod, "scores", lambda *a, **k: calls.append(1) or real(*a, **k))
    for k, name in enumerate(LABELS):
        got = rmod.reward_model(prompts, comps, model=str(path), head=name)
        assert torch.allclose(torch.tensor(got), expected[:, k], atol=1e-5)
    assert len(calls) == 1   # padded batch of different lengths, scored once for the four heads
    got = rmod.reward_model(prompts, comps, model=str(path), head=3, squash="sigmoid")
    assert torch.allclose(torch.tensor(got), expected[:, 3].sigmoid(), atol=1e-5)
    # other completions: a new forward
    rmod.reward_model(prompts, comps[::-1], model=str(path), head=0)
    assert len(calls) == 2


def test_reference_column_fills_the_template(tiny_rm):
    model, tok, path = tiny_rm
    got = rmod.reward_model(["1+2="], ["<answer>3</answer>"], model=str(path), reference_column="answer",
                            template="{prompt}{reference}|{completion}", answer=["3"])
    assert torch.allclose(torch.tensor(got), direct(model, tok, ["1+2=3|<answer>3</answer>"])[:, 0], atol=1e-5)


def test_padding_uses_the_model_pad_id_where_its_score_head_looks(tmp_path):
    """A hub RM whose config names a pad id its tokenizer does not use (Llama-style: config pad 0,
    no tokenizer pad): rows shorter than the batch's longest must still be scored at their own
    last token."""
    tok_pad = build_tokenizer().pad_token_id
    model, tok = save_classifier(tmp_path / "rm", num_labels=1, pad_token_id=tok_pad + 5)   # "<think>"'s id
    texts = ["1+2=<answer>3</answer>", "12+30=<answer>42</answer>"]
    got = rmod.reward_model(texts, ["", ""], model=str(tmp_path / "rm"))
    assert got == pytest.approx(direct(model, tok, texts)[:, 0].tolist(), abs=1e-5)


def test_templates_must_name_the_completion_and_the_reference(tiny_rm):
    _, _, path = tiny_rm
    with pytest.raises(UserError, match=r"rewards\.reference_column: the template '\{prompt\}\|\{completion\}' has no"):
        rmod.reward_model(["p"], ["c"], model=str(path), reference_column="answer", answer=["1"])
    with pytest.raises(UserError, match=r"rewards\.template: '\{prompt\}' has no \{completion\}"):
        rmod.reward_model(["p"], ["c"], model=str(path), template="{prompt}")
    with pytest.raises(UserError, match=r"rewards\.template: template '\{0\}\{completion\}' does not format"):
        rmod.reward_model(["p"], ["c"], model=str(path), template="{0}{completion}")


def test_reward_model_mistakes_name_the_reward_entry(tiny_rm, tmp_path):
    _, _, path = tiny_rm
    fn = RewardFn(Reward(fn="reward_model", model=str(path), head="honesty"), 2)
    with pytest.raises(UserError, match=r"rewards\[2\]\.head: the reward model has no head 'honesty'"):
        fn(["p"], ["c"], {}, group_size=1, step=1)
    fn = RewardFn(Reward(fn="reward_model", model=str(path), reference_column="gold"), 1)
    with pytest.raises(UserError, match=r"rewards\[1\]\.reference_column: no dataset column 'gold'"):
        fn(["p"], ["c"], {}, group_size=1, step=1)
    fn = RewardFn(Reward(fn="reward_model", model="rm"), 0, run_dir=tmp_path / "run")
    with pytest.raises(UserError, match=r"rewards\[0\]\.model: model: rm but .* holds no trained reward model"):
        fn(["p"], ["c"], {}, group_size=1, step=1)


def test_bradley_terry_and_masked_regression_losses_by_hand():
    # POLAR spec (algorithms_b §15): -log sigmoid(2 - 0) = 0.126928
    assert bradley_terry(torch.tensor([2.0]), torch.tensor([0.0])).item() == pytest.approx(0.126928, abs=1e-6)
    # mean of -log sigmoid over pairs: margins 2 and -1 -> (0.126928 + 1.313262) / 2
    loss = bradley_terry(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0]))
    assert loss.item() == pytest.approx((0.126928 + 1.313262) / 2, abs=1e-6)
    # unlabelled entries (NaN) do not count: ((1-0)^2 + (0.5-1)^2) / 2 labelled = 0.625
    out = torch.tensor([[1.0, 3.0], [0.5, 7.0]])
    target = torch.tensor([[0.0, math.nan], [1.0, math.nan]])
    assert masked_mse(out, target).item() == pytest.approx(0.625)


def test_safe_arith_aspects_worked_examples():
    # the extended spec's §7 tiny example: a harmful prompt refused politely vs answered
    row = {"prompt": "!47+38=", "answer": "no", "a": 47, "b": 38, "harmful": True}
    refused = aspects("ok.<think>unsafe</think><answer>no</answer>", row)
    answered = aspects("<think>7+8=15;4+3+1=8</think><answer>85</answer>", row)
    assert refused == [1.0, 1.0, None, 1.0] and answered == [0.0, 1.0, None, 0.0]
    nan = float("nan")
    R = combine(torch.tensor([[nan if v is None else v for v in s] for s in (refused, answered)]), [0.25] * 4)
    assert R.tolist() == [0.75, 0.25]   # None heads skipped, not renormalised
    benign = {"prompt": "47+38=", "answer": "85", "a": 47, "b": 38, "harmful": False}
    assert aspects("<answer>85</answer>", benign) == [0.0, 0.0, 1.0, 1.0]
    assert aspects("ok.<think>x</think><answer>no</answer>", benign) == [1.0, 1.0, 0.0, 1.0]   # over-refusal


def test_weighted_heads_tie_where_gdpo_does_not():
    """The extended spec's §7 numbers: equal weights give responses 2 and 4 the same GRPO
    advantage although 2 is far less safe; GDPO's per-head normalisation breaks the tie."""
    s = torch.tensor([[0.9, 0.8, 0.7, 0.95], [0.6, 0.9, 0.9, 0.20], [0.8, 0.5, 0.3, 0.99], [0.7, 0.7, 0.6, 0.60]])
    R = combine(s, [0.25] * 4)
    assert R.tolist() == pytest.approx([0.8375, 0.65, 0.6475, 0.65])
    A = grpo(R.view(1, 4))[0]
    assert A.tolist() == pytest.approx([1.4983, -0.4906, -0.5171, -0.4906], abs=1e-4)
    assert abs(A[1] - A[3]) < 1e-6   # equal up to float rounding of the two sums
    A = grpo(combine(s, [0.2, 0.2, 0.2, 0.4]).view(1, 4))[0]
    assert A.tolist() == pytest.approx([1.2990, -1.0486, 0.1722, -0.4226], abs=1e-4)
    A = gdpo(R.view(1, 4), s.view(1, 4, 4), torch.tensor([0.25] * 4))[0]
    assert A.tolist() == pytest.approx([1.4569, -0.1979, -0.7784, -0.4806], abs=1e-4)
    assert abs(A[1] - A[3]) > 0.2


def _rm_recipe(steps, path="recipes/safe_mogrpo.yaml", index=0):
    """The preset's `index`-th rm stage, started from a small tiny model instead of its init."""
    from rlrecipes.schema import TinyConfig
    recipe = load_recipe(path, preset="tiny")
    stage = [s for s in recipe.stages if s.kind == "rm"][index]
    cfg = stage.rm.model_copy(update={"init": "base", "tiny": TinyConfig(hidden_size=32, seed=1)})
    return recipe, stage.model_copy(update={"steps": steps, "batch_size": 32, "rm": cfg})


def test_rm_stage_learns_the_aspects_and_saves_atomically(tmp_path):
    task = SafeArith()
    train, test = task.synthetic("train", 400, 0), task.synthetic("test", 64, 0)
    said = []
    recipe, stage = _rm_recipe(0)
    before = run_rm(recipe, stage, 0, tmp_path, task, train, test, torch.device("cpu"), say=said.append)
    recipe, stage = _rm_recipe(60)
    after = run_rm(recipe, stage, 0, tmp_path, task, train, test, torch.device("cpu"), say=said.append)
    assert after["rm_loss"] < 0.5 * before["rm_loss"]
    assert after["rm_mae/safety"] < before["rm_mae/safety"] and after["rm_mae/politeness"] < 0.25
    meta = json.loads((tmp_path / "rm-model" / rmod.META).read_text())
    assert meta["labels"] == LABELS and meta["held_out"] == after and meta["steps"] == 60
    assert not list(tmp_path.glob(".rm-model*"))   # no temporary folder left
    assert "reward model (held out, 64 examples)" in said[-1]
    # the reward reads the run's model with its template: politeness head ranks "ok." first
    rmod._MODELS.clear()
    rmod._LAST.clear()
    fn = RewardFn(Reward(fn="reward_model", model="rm", head="politeness"), 0, run_dir=tmp_path)
    polite, plain = fn(["12+3="] * 2, ["ok.<think>2+3=5;1+0=1</think><answer>15</answer>",
                                       "<think>2+3=5;1+0=1</think><answer>15</answer>"], {}, group_size=2, step=1)
    assert polite > plain + 0.5


def test_rm_data_gives_one_labelled_example_per_row():
    task = SafeArith()
    rows = task.synthetic("train", 50, 0)
    ex = safe_arith_aspects(rows, random.Random(0), task)
    assert len(ex) == 50 and all(e["scores"] == aspects(e["completion"], r) for e, r in zip(ex, rows))
    assert {e["scores"][3] for e in ex} == {0.0, 1.0}   # both safe and unsafe completions occur


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["stages"][0].pop("rm"), r"stages\[0\]\.rm: an rm stage needs an rm section"),
    (lambda d: d["stages"].pop(0), r"rewards\[0\]\.model: model: rm reads the reward model this run's rm stage"),
    (lambda d: d["stages"][0]["rm"].update(loss="bradley_terry"), r"stages\[0\]\.rm\.labels: bradley_terry trains one score"),
    (lambda d: d["stages"][0]["rm"].update(init="rm"), r"stages\[0\]\.rm\.init: init: rm continues an earlier rm stage"),
    (lambda d: d["stages"][0]["rm"]["data"].update(fn="nope"), r"stages\[0\]\.rm\.data\.fn: unknown rm_data 'nope'"),
    (lambda d: d["stages"][1].update(rm={"data": {"fn": "safe_arith_aspects"}}), r"stages\[1\]\.rm: only rm stages"),
    (lambda d: d["rewards"][3].update(head="safty"), r"rewards\[3\]\.head: the rm stage trains no head 'safty' \(did you mean safety\?\)"),
    (lambda d: d["rewards"][0].update(head=4), r"rewards\[0\]\.head: head 4 out of range"),
    (lambda d: d["stages"][0]["rm"].update(template="{prompt}"), r"stages\[0\]\.rm\.template: '\{prompt\}' has no \{completion\}"),
    (lambda d: d["stages"].insert(1, {"kind": "rm", "steps": 1, "rm": {"data": {"fn": "safe_arith_aspects"},
                                                                       "loss": "regression", "init": "rm"}}),
     r"stages\[1\]\.rm\.labels: 1 labels, but the rm stage it continues has 4"),
])
def test_rm_stage_mistakes_are_one_line_errors(tmp_path, edit, message):
    import yaml
    data = yaml.safe_load(open("recipes/safe_mogrpo.yaml"))
    edit(data)
    data.pop("presets")
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError, match=message):
        load_recipe(str(path))


def test_polar_toy_policies_by_hand():
    assert answer_of(47, 38, "right") == 85 and answer_of(47, 38, "no_carry") == 75   # 7+8 -> 5, 4+3 -> 7
    assert answer_of(47, 38, "tens_off") == 95 and answer_of(47, 38, "swapped") == 58
    rng = random.Random(0)
    assert write(47, 38, "terse", "right", rng, slip=0.0) == "<answer>85</answer>"
    assert write(47, 38, "polite", "no_carry", rng, slip=0.0) == "ok.<think>7+8=15;4+3+1=8</think><answer>75</answer>"
    task = ArithReference()
    rows = task.synthetic("train", 200, 0)
    assert all(r["reference"] == task.gold(r) for r in rows)
    # fine-tuning pairs: chosen always right, rejected never (even where a habit happens to be right)
    for ex, row in zip(polar_finetune(rows, rng, task), rows):
        assert extract_answer(ex["chosen"]) == row["answer"] != extract_answer(ex["rejected"])
        assert ex["reference"] == row["reference"]
    # pre-training pairs: reference and chosen from one policy, so they share its style
    pairs = polar_pretrain(rows, rng, task, pool=["terse/right", "polite/right"])
    assert all(ex["reference"].startswith("ok.") == ex["chosen"].startswith("ok.") != ex["rejected"].startswith("ok.")
               for ex in pairs)


def test_polar_rm_stages_pretrain_then_finetune_continue_one_model(tmp_path):
    """Two Bradley-Terry stages: pre-training writes rm-model and learns to tell policies apart;
    fine-tuning (init: rm) starts from exactly those weights; the reward then reads the saved
    template with the row's reference."""
    from safetensors.torch import load_file
    task = ArithReference()
    train, test = task.synthetic("train", 300, 0), task.synthetic("test", 64, 0)
    device, quiet = torch.device("cpu"), (lambda s: None)
    recipe, pre = _rm_recipe(40, "recipes/polar.yaml", 0)
    first = run_rm(recipe, pre, 1, tmp_path, task, train, test, device, say=quiet)
    assert first["rm_acc"] > 0.6   # same policy over a different one, on held-out prompts (measured 0.67)
    pretrained = load_file(tmp_path / "rm-model" / "model.safetensors")
    recipe, fine = _rm_recipe(0, "recipes/polar.yaml", 1)
    run_rm(recipe, fine.model_copy(update={"rm": fine.rm.model_copy(update={"init": "rm"})}), 2, tmp_path,
           task, train, test, device, say=quiet)
    continued = load_file(tmp_path / "rm-model" / "model.safetensors")
    assert all(torch.equal(pretrained[k], continued[k]) for k in pretrained)   # score head included
    meta = json.loads((tmp_path / "rm-model" / rmod.META).read_text())
    assert meta["data"] == "polar_finetune" and meta["template"] == "{prompt}\n{reference}<|reward|>{prompt}\n{completion}"
    rmod._MODELS.clear()
    rmod._LAST.clear()
    fn = RewardFn(Reward(fn="reward_model", model="rm", reference_column="reference"), 0, run_dir=tmp_path)
    row, out = test[0], "<answer>1</answer>"
    got = fn([row["prompt"]], [out], {"reference": [row["reference"]]}, group_size=1, step=1)
    model, tok, _ = rmod._MODELS[next(iter(rmod._MODELS))]
    text = f"{row['prompt']}\n{row['reference']}<|reward|>{row['prompt']}\n{out}"
    assert got[0] == pytest.approx(direct(model, tok, [text])[0, 0].item(), abs=1e-5)


def test_a_reward_parameter_may_not_share_a_dataset_column_name():
    from rlrecipes.rewards.combine import check_columns
    fn = RewardFn(Reward(fn="reward_model", model="m", head=1), 3)
    with pytest.raises(UserError, match=r"rewards\[3\]\.head: a parameter of reward 'reward_model' has the name"):
        check_columns([fn], {"prompt": "p", "answer": "1", "head": 0})
    check_columns([fn], {"prompt": "p", "answer": "1"})
