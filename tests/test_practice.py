"""The practice stage (Training-Free GRPO, arXiv 2510.08191): library operations, group filter and
call counts from the worked example of next/training_free_grpo.md §7, JSON parsing with retries,
the tiny analogue's mock roles, validation, and exact resume of a run."""
import json
import random
import shutil
import zlib
from types import SimpleNamespace

import pytest

from rlrecipes import llm as llm_mod
from rlrecipes import practice_tiny as tiny
from rlrecipes.config import Reward, load_recipe
from rlrecipes.errors import UserError
from rlrecipes.llm import LLM
from rlrecipes.practice import ExperienceLibrary, keep_group, parse_lessons, parse_operations, render_prompt, schedule
from rlrecipes.practice_stage import Clients, practice_step
from rlrecipes.registry import register
from rlrecipes.rewards.combine import RewardFn
from rlrecipes.schema import PracticeStage

PRACTICE = {"kind": "practice", "practice": {"llm": {"fn": "test_dice", "p": 0.5}, "epochs": 2, "batch_size": 4,
                                             "group_size": 4, "rows": 12}}


@pytest.fixture
def recipe_file(tmp_path):
    """A practice-only recipe on the tiny model's tokenizer (the policy and roles are clients)."""
    path = tmp_path / "tfg.yaml"
    path.write_text(json.dumps({
        "name": "tfg", "paper": {"title": "Training-Free GRPO", "arxiv": "2510.08191"},
        "model": {"name_or_path": "tiny"}, "data": {"task": "arith", "train_size": 40, "test_size": 8},
        "stages": [PRACTICE], "rewards": [{"fn": "accuracy"}], "eval": {"samples": 2, "k": [1], "limit": 4}}))
    return path
MOCK_ROLES = {"summary": {"fn": "mock", "reply_fn": "rlrecipes.practice_tiny:summary"},
              "advantage": {"fn": "mock", "reply_fn": "rlrecipes.practice_tiny:advantage"},
              "update": {"fn": "mock", "reply_fn": "rlrecipes.practice_tiny:update"}}


@pytest.fixture(autouse=True)
def fresh_clients(monkeypatch):
    monkeypatch.setattr(llm_mod, "_CLIENTS", {})


@register("llm", "test_dice")
class Dice(LLM):
    """A test policy: per prompt and seed, right ("<answer>a+b</answer>", or with a scratchpad)
    with probability `p`, else "<answer>0</answer>"; the same seed gives the same replies."""

    def __init__(self, p: float = 0.5, where: str = "llm"):
        self.p = p

    def complete(self, prompts, temperature=None, max_tokens=None, seed=None):
        out = []
        for i, prompt in enumerate(prompts):
            rng = random.Random(zlib.crc32(f"{seed}|{i}|{prompt}".encode()))
            a, b = (int(x) for x in prompt.rsplit("\n", 1)[-1].rstrip("=").split("+"))
            style = "<think>.</think>" if rng.random() < 0.5 else ""
            out.append(f"{style}<answer>{a + b if rng.random() < self.p else 0}</answer>")
        return out


# ------------------------------------------------------------------------------ the library
def test_apply_worked_example():
    """§7: E = {G0: e0, G1: e1, G2: e2}; ADD x, UPDATE G1, DELETE G0, UPDATE unknown G9 (adds),
    NONE -> {G1: e1', G2: e2, 3: x, 4: y} -> re-keyed {G0: e1', G1: e2, G2: x, G3: y}."""
    E = ExperienceLibrary({"G0": "e0", "G1": "e1", "G2": "e2"})
    plan = [{"operation": "ADD", "content": "x"}, {"operation": "UPDATE", "id": "G1", "content": "e1'"},
            {"operation": "DELETE", "id": "G0"}, {"operation": "UPDATE", "id": "G9", "content": "y"},
            {"operation": "NONE", "content": ""}]
    new, counts = E.apply(plan)
    assert new.items == {"G0": "e1'", "G1": "e2", "G2": "x", "G3": "y"}
    assert list(new.items) == ["G0", "G1", "G2", "G3"]
    assert new.render() == "[G0]. e1'\n[G1]. e2\n[G2]. x\n[G3]. y"
    assert counts == {"ADD": 1, "UPDATE": 2, "DELETE": 1, "NONE": 1}   # as asked (the unknown id was added)
    assert E.items == {"G0": "e0", "G1": "e1", "G2": "e2"}           # E itself is unchanged
    # an ADD with empty content and a DELETE of an unknown id change nothing (counted NONE)
    assert E.apply([{"operation": "ADD", "content": " "}, {"operation": "DELETE", "id": "G7"}]) == \
        (E, {"ADD": 0, "UPDATE": 0, "DELETE": 0, "NONE": 2})


def test_library_round_trips_through_an_atomic_file(tmp_path):
    E = ExperienceLibrary({"G0": "check carries", "G1": "ünïcode ok"})
    E.save(tmp_path / "e" / "step-0001.json")
    assert ExperienceLibrary.load(tmp_path / "e" / "step-0001.json") == E
    assert not list((tmp_path / "e").glob(".tmp-*"))
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="an experience library is a JSON object"):
        ExperienceLibrary.load(tmp_path / "bad.json")


def test_render_prompt_paper_and_tip_layouts():
    paper = PracticeStage(llm={"fn": "mock"}).render
    E = ExperienceLibrary({"G0": "a", "G1": "b"})
    assert render_prompt(E, "Q", paper) == paper.header + "[G0]. a\n[G1]. b\n\nQ"
    assert paper.header.startswith("When solving problems, you MUST first carefully read")
    tip = PracticeStage(llm={"fn": "mock"}, render={"header": "", "line": "[tip:{text}]", "sep": "\n"}).render
    assert render_prompt(ExperienceLibrary({"G0": "carry"}), "47+38=", tip) == "[tip:carry]\n47+38="
    assert render_prompt(ExperienceLibrary(), "47+38=", tip) == "47+38="


def test_parsing_replies():
    assert parse_lessons("think...\n<Experiences>\n1. Check carries.\n- Keep it short\n</Experiences>", 1) == \
        ["Check carries."]
    assert parse_lessons("<experiences>a\nb</experiences>", 5) == ["a", "b"]
    assert parse_operations('```json\n[{"operation": "add", "content": "x"}]\n```') == \
        [{"operation": "add", "content": "x"}]
    assert parse_operations("no json here") is None
    assert parse_operations('[{"operation": "MERGE"}]') is None
    assert parse_operations("[1, 2]") is None


def test_schedule_is_a_seeded_shuffle_per_epoch():
    batches = schedule(10, 2, 4, seed=0)
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2]
    assert sorted(sum(batches[:3], [])) == list(range(10)) and sorted(sum(batches[3:], [])) == list(range(10))
    assert schedule(10, 2, 4, seed=0) == batches and schedule(10, 2, 4, seed=1) != batches


# ------------------------------------------------------------------- one step: filter and calls
SCRIPT = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1]


def scripted(prompts, completions, **columns):
    """§7's rewards for a batch of 4 questions x G = 5: q1 all right, q2 all wrong, q3 [1,0,1,0,0],
    q4 [0,0,0,0,1]."""
    return [float(x) for x in SCRIPT]


@pytest.mark.parametrize("use_gt,kept,calls", [(True, 2, 15), (False, 4, 29)])
def test_group_filter_and_call_count_worked_example(use_gt, kept, calls):
    """Kept {q3, q4} (means 0.4, 0.2): 10 summaries + 2 advantages + 2 group updates + 1 batch
    update = 15 calls; without ground truth every group: 20 + 4 + 4 + 1 = 29."""
    assert [keep_group(SCRIPT[i:i + 5], True) for i in range(0, 20, 5)] == [False, False, True, True]
    cfg = PracticeStage(llm={"fn": "mock", "default": "[]"}, batch_size=4, group_size=5, use_ground_truth=use_gt)
    clients = Clients(cfg, None, None, "stages[0].practice")
    rows = [{"prompt": f"{i}+1=", "answer": str(i + 1)} for i in range(4)]
    reward = RewardFn(Reward(fn="tests.test_practice:scripted"), 0)
    task = SimpleNamespace(prompt=lambda r: r["prompt"])
    _, metrics = practice_step(clients, cfg, ExperienceLibrary(), rows, task, [reward], step=1, seed=0)
    assert metrics["practice/kept_frac"] == kept / 4
    assert sum(v for k, v in clients.calls.items() if k != "policy") == calls
    assert clients.calls == {"policy": 20, "summary": 5 * kept, "advantage": kept, "update": kept + 1}
    assert metrics["reward_mean"] == pytest.approx(sum(SCRIPT) / 20)
    seen = llm_mod.client({"fn": "mock", "default": "[]"}, "stages[0].practice.llm").calls
    summaries = [c for c in seen if c.startswith("A solver was given")]
    assert all(("Reference answer: [REDACTED]" in c) != use_gt for c in summaries)


def test_unparseable_json_is_asked_again_then_counted(monkeypatch):
    replies = iter(["sorry", '[{"operation": "ADD", "content": "x"}]'])
    monkeypatch.setattr(tiny, "flaky", lambda text: next(replies, "still not json"), raising=False)
    cfg = PracticeStage(llm={"fn": "mock", "reply_fn": "rlrecipes.practice_tiny:flaky"}, json_retries=2)
    clients = Clients(cfg, None, None, "p")
    assert clients.ask_json("update", ["q"], retries=2) == ([[{"operation": "ADD", "content": "x"}]], 0)
    assert clients.calls["update"] == 2
    assert clients.ask_json("update", ["q"], retries=2) == ([[]], 1)   # 3 tries, then no operations
    assert clients.calls["update"] == 5


# ------------------------------------------------------------------------- the tiny analogue
def test_experience_tips_transform():
    gold = "<think>7+8=15;4+3+1=8</think><answer>85</answer>"
    seen = {tiny.experience_tips("47+38=", gold, {}, random.Random(s)) for s in range(40)}
    assert seen == {("[tip:carry]\n47+38=", gold), ("[tip:fast]\n47+38=", "<answer>85</answer>"),
                    ("47+38=", gold), ("47+38=", "<answer>85</answer>")}
    with pytest.raises(ValueError):
        tiny.experience_tips("q", gold, {}, random.Random(0), p_tip=2.0)


def test_tiny_mock_roles():
    assert tiny.summary("...The solver's attempt:\n<think>1+2=3</think><answer>3</answer>\n\nSummarise") == \
        "used a scratchpad"
    assert tiny.summary("...The solver's attempt:\n<answer>3</answer>\n\nSummarise") == "answered directly"
    group = ("Attempt 1 (reward 1):\nused a scratchpad\n\nAttempt 2 (reward 0):\nanswered directly\n\n"
             "Attempt 3 (reward 0):\nused a scratchpad\n\nAttempt 4 (reward 0):\nanswered directly")
    assert parse_lessons(tiny.advantage(group), 1) == ["carry"]       # means 0.5 vs 0.0
    assert parse_lessons(tiny.advantage(group.replace("reward 1", "reward 0")), 1) == []   # a tie: no lesson
    lib = "Experience library:\n[G0]. fast\n\nNew lessons:\n- carry\n\nDecide"
    assert json.loads(tiny.update(lib)) == [{"operation": "UPDATE", "id": "G0", "content": "carry"}]
    assert json.loads(tiny.update(lib.replace("fast", "carry"))) == [{"operation": "NONE", "content": "carry"}]
    assert json.loads(tiny.update("Experience library:\n(empty)\n\nNew lessons:\n- fast\n\nDecide")) == \
        [{"operation": "ADD", "content": "fast"}]
    ops = [{"operation": "ADD", "content": "carry"}, {"operation": "ADD", "content": "fast"},
           {"operation": "ADD", "content": "carry"}]
    batch = f"Experience library:\n(empty)\n\nOperations proposed from several problems:\n{json.dumps(ops)}\n\nMerge"
    assert json.loads(tiny.update(batch)) == [{"operation": "ADD", "content": "carry"}]
    keep = [{"operation": "NONE", "content": "carry"}] * 2 + [{"operation": "UPDATE", "id": "G0", "content": "fast"}]
    assert json.loads(tiny.update(batch.replace(json.dumps(ops), json.dumps(keep)))) == []


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("stages,match", [
    ("[{kind: practice}]", r"stages\[0\]\.practice: a practice stage needs a practice section"),
    ("[{kind: practice, steps: 3, practice: {llm: {fn: mock}}}]", r"stages\[0\]\.steps: a practice stage"),
    ("[{kind: practice, practice: {llm: {fn: mock}}}, {kind: rl}]", r"stages\[0\]\.kind: .* cannot share"),
    ("[{kind: practice, practice: {llm: {fn: mock, rulez: []}}}]",
     r"stages\[0\]\.practice\.llm\.rulez: unknown parameter of llm 'mock'"),
    ("[{kind: practice, practice: {llm: {fn: mock}, roles: {update: {fn: gpt}}}}]",
     r"stages\[0\]\.practice\.roles\.update\.fn: unknown llm 'gpt'"),
    ("[{kind: practice, practice: {llm: {fn: mock}, render: {line: '[{idx}]'}}}]",
     r"stages\[0\]\.practice\.render\.line: .* does not format"),
    ("[{kind: sft, steps: 5, practice: {llm: {fn: mock}}}]", r"stages\[0\]\.practice: only practice stages"),
])
def test_validation_errors(recipe_file, stages, match):
    assert load_recipe(recipe_file).stages[0].practice.rows == 12
    with pytest.raises(UserError, match=match):
        load_recipe(recipe_file, overrides=[f"stages={stages}"])


def test_an_api_policy_validates_offline_without_a_key(recipe_file, monkeypatch):
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    llm = "{fn: openai_compatible, base_url: 'https://api.deepseek.com/v1', model: deepseek-chat, api_key_env: DEEPSEEK_API_KEY}"
    r = load_recipe(recipe_file, overrides=[f"stages=[{{kind: practice, practice: {{llm: {llm}}}}}]"])
    assert r.stages[0].practice.llm.fn == "openai_compatible" and r.stages[0].practice.group_size == 5


# ---------------------------------------------------------------------------- run and resume
def test_practice_run_writes_libraries_and_resumes_exactly(recipe_file, tmp_path):
    from rlrecipes.run import train
    stage = {**PRACTICE, "practice": {**PRACTICE["practice"], "roles": MOCK_ROLES,
                                      "render": {"header": "", "line": "[tip:{text}]", "sep": "\n"}}}
    recipe = load_recipe(recipe_file, overrides=[f"stages={json.dumps([stage])}"])
    full, cut = tmp_path / "full", tmp_path / "cut"
    summary = train(recipe, str(full), say=lambda *a: None)
    assert summary["status"] == "finished" and set(summary["eval"]) == {"start", "end"}
    rows = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward_mean" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]           # 12 rows / 4 per batch x 2 epochs
    assert sum(r["practice/kept_frac"] for r in steps) > 0            # some mixed groups were used
    assert any(r["practice/library_size"] for r in steps)
    assert ExperienceLibrary.load(full / "experiences" / "final.json") == \
        ExperienceLibrary.load(full / "experiences" / "step-0006.json")
    # a run killed after step 3 (its state file says 3; later files and outputs gone) resumes
    shutil.copytree(full, cut)
    (cut / "practice_state.json").write_text(json.dumps({"step": 3, "calls": steps[2] and {
        k.removeprefix("practice/calls_"): v for k, v in steps[2].items() if k.startswith("practice/calls_")}}))
    for name in ("step-0004.json", "step-0005.json", "step-0006.json", "final.json"):
        (cut / "experiences" / name).unlink()
    (cut / "summary.json").unlink()
    train(recipe, None, say=lambda *a: None, resume=str(cut))
    assert (cut / "metrics.jsonl").read_text() == (full / "metrics.jsonl").read_text()
    for name in ("step-0004.json", "step-0006.json", "final.json"):
        assert (cut / "experiences" / name).read_text() == (full / "experiences" / name).read_text()
