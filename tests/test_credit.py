"""Token-level credit (issue 19, mechanism 1): rewards that return PerSegment, the token inputs
the loop builds from them, per-token advantages through the loss, and the estimators on top."""
import json
import math

import pytest
import torch

from rlrecipes.algorithms.advantages import grpo
from rlrecipes.algorithms.token_credit import hrpo, returns_to_go
from rlrecipes.config import load_recipe
from rlrecipes.registry import register
from rlrecipes.rewards.dense import PerSegment, char_ends, token_rewards, token_spans
from rlrecipes.run import train
from rlrecipes.tiny import build_tokenizer

from .conftest import FAST


@register("advantage", "test_token_grpo")
def token_grpo(rewards_BG, mask_BGT):
    """GRPO's advantage copied onto every token: the token path must reproduce GRPO exactly."""
    return grpo(rewards_BG).unsqueeze(-1).expand_as(mask_BGT).clone()


SEEN = {}


@register("advantage", "test_record_token_inputs")
def record(rewards_BG, token_rewards_BGT, segments_BGK, mask_BGT, ids_BGT, reward_names_K):
    SEEN.update(rewards=rewards_BG.clone(), token=token_rewards_BGT.clone(), segments=segments_BGK,
                mask=mask_BGT.clone(), ids=ids_BGT.clone(), names=reward_names_K)
    return grpo(rewards_BG).unsqueeze(-1) * mask_BGT


def per_char_reward(completions, **_):
    """Every character earns 0.1 (a segment per character), so the total is 0.1 x length."""
    return [PerSegment([(i + 1, 0.1) for i in range(len(c))]) for c in completions]


def test_per_segment_is_the_sum_of_its_parts():
    v = PerSegment([(2, 2.0), (5, 1.0), (7, 0.0), (9, 1.0)])
    assert v == 4.0 and isinstance(v, float) and v.parts[1] == (5, 1.0)
    assert PerSegment([]) == 0.0
    with pytest.raises(ValueError, match="increasing"):
        PerSegment([(3, 1.0), (3, 1.0)])


def test_segments_map_to_the_tokens_that_complete_them():
    tok = build_tokenizer()
    text = "ab,cd,e"
    ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id, tok.pad_token_id]
    keep = [True] * len(text) + [False, False]   # EOS and pad decode to nothing
    ends = char_ends(tok, ids, keep)
    assert ends == [1, 2, 3, 4, 5, 6, 7, 7, 7]   # the character tokenizer: one character per token
    spans = token_spans(ends, keep, [(3, 1.0), (6, 0.5), (7, 0.0)])
    assert spans == [(0, 3, 1.0), (3, 6, 0.5), (6, 7, 0.0)]
    # a plain reward (None) earns on the last policy token; weights apply; NaN counts 0
    r = token_rewards(9, [spans, None, None], [1.5, 2.0, math.nan], [2.0, 0.5, 1.0], last=7)
    assert r.tolist() == pytest.approx([0, 0, 2.0, 0, 0, 1.0, 0, 1.0, 0])
    assert r.sum().item() == pytest.approx(2.0 * 1.5 + 0.5 * 2.0)


def test_returns_to_go_worked_example():
    """SubPO: coverage steps {a,b}, {b,c}, {a,b}, {d} gain [2, 1, 0, 1] (algorithms_b.md §20); one
    token per step. Returns-to-go [4, 2, 1, 1]; the other completion of the group earns 2 on
    its second token. Group baseline b = (4 + 2) / 2 = 3."""
    r = torch.tensor([[[2.0, 1.0, 0.0, 1.0], [0.0, 2.0, 0.0, 0.0]]])
    m = torch.tensor([[[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]]])
    totals, segs = r.sum(-1), [[[None], [None]]]
    rtg = lambda **kw: returns_to_go(totals, r, m, segments_BGK=segs, **kw).tolist()  # noqa: E731
    assert rtg(baseline="none") == [[[4, 2, 1, 1], [2, 2, 0, 0]]]
    assert rtg(baseline="group") == [[[1, -1, -2, -2], [-1, -1, 0, 0]]]
    # position baseline: t=0 mean(4, 2) = 3, t=1 mean(2, 2) = 2, t=2,3 only the first row
    assert rtg(baseline="position") == [[[1, 0, 0, 0], [-1, 0, 0, 0]]]
    # gamma 0.5: R_3 = 1, R_2 = 0 + 0.5, R_1 = 1 + 0.25, R_0 = 2 + 0.625
    assert rtg(gamma=0.5, baseline="none")[0][0] == pytest.approx([2.625, 1.25, 0.5, 1.0])


def test_returns_to_go_segment_baseline_worked_example():
    """Decisions centred by the group's mean per decision index, tails by the mean tail.
    g0: gains [2, 1, 0, 1] on tokens 0-3, format 0.1 on its tail token 4; g1: gains [0, 2] on
    tokens 0-1, tail tokens 2 (format 0) and 3-4 masked. Decision means [1, 1.5, 0, 0.5] (g1
    lacks decisions 2, 3: 0), tail mean 0.05. g0 centred [1, -0.5, 0, 0.5], tail 0.05:
    returns [1.05, 0.05, 0.55, 0.55] and tail 0.05; g1 centred [-1, 0.5, 0, -0.5], tail -0.05:
    [-1.05, -0.05] and tail -0.05. At the first token A = R - mean R = 4.1 - 3.05."""
    r = torch.tensor([[[2.0, 1.0, 0.0, 1.0, 0.1], [0.0, 2.0, 0.0, 0.0, 0.0]]])
    m = torch.tensor([[[1.0] * 5, [1.0, 1.0, 1.0, 0.0, 0.0]]])
    segs = [[[[(0, 1, 2.0), (1, 2, 1.0), (2, 3, 0.0), (3, 4, 1.0)], None], [[(0, 1, 0.0), (1, 2, 2.0)], None]]]
    adv = returns_to_go(r.sum(-1), r, m, segments_BGK=segs)
    assert adv[0, 0].tolist() == pytest.approx([1.05, 0.05, 0.55, 0.55, 0.05])
    assert adv[0, 1].tolist() == pytest.approx([-1.05, -0.05, -0.05, 0.0, 0.0])
    # scale group: divided by the RMS over the 8 policy tokens, sqrt((1.05^2 + 1.05^2 + 3 x 0.55^2
    # + 3 x 0.05^2 ... ) / 8): 1.05, 0.05, 0.55, 0.55, 0.05 and -1.05, -0.05, -0.05
    rms = math.sqrt((2 * 1.05 ** 2 + 2 * 0.55 ** 2 + 4 * 0.05 ** 2) / 8)
    scaled = returns_to_go(r.sum(-1), r, m, segments_BGK=segs, scale="group")
    assert scaled[0, 0, 0].item() == pytest.approx(1.05 / (rms + 1e-4))
    # totals that tie while decisions differ (the same sensors in another order): no blow-up
    tie = torch.tensor([[[2.0, 1.0, 0.0], [1.0, 2.0, 0.0]]])
    tie_segs = [[[[(0, 1, 2.0), (1, 2, 1.0)], None], [[(0, 1, 1.0), (1, 2, 2.0)], None]]]
    out = returns_to_go(tie.sum(-1), tie, torch.ones(1, 2, 3), segments_BGK=tie_segs, scale="group")
    assert out.abs().max().item() < 2.0 and out[0, 0, 0].item() == pytest.approx(0.0, abs=1e-6)


def test_hrpo_worked_example():
    """Group of 3, rewards R = [1, 0, 2] -> GRPO part (R - 1) / (1 + 1e-4). Action scores
    (segment values of reward `ration`): g0 [1, -1], g1 [0], g2 [-1, 0, 0]. Decision 0 mean 0,
    decision 1 mean over g0 and g2 = -0.5, decision 2 only g2 (no action term). lam 0.5."""
    mask = torch.ones(1, 3, 6)
    seg = [[[None, [(0, 2, 1.0), (2, 4, -1.0)]], [None, [(0, 3, 0.0)]],
            [None, [(0, 1, -1.0), (1, 2, 0.0), (2, 6, 0.0)]]]]
    adv = hrpo(torch.tensor([[1.0, 0.0, 2.0]]), seg, mask, ["acc", "ration"], "ration", lam=0.5)
    g = 1 / (1 + 1e-4)
    assert adv[0, 0].tolist() == pytest.approx([0.5, 0.5, -0.25, -0.25, 0, 0])
    assert adv[0, 1].tolist() == pytest.approx([-g] * 6)
    assert adv[0, 2].tolist() == pytest.approx([g - 0.5, g + 0.25, g, g, g, g])
    with pytest.raises(ValueError, match="not one of"):
        hrpo(torch.zeros(1, 3), seg, mask, ["acc", "x"], "ration")


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]


def test_token_path_reproduces_grpo_exactly(tmp_path):
    """GRPO's advantages given per token give bitwise the same losses and weights as per sequence."""
    runs = {}
    for adv in ("grpo", "test_token_grpo"):
        r = load_recipe("recipes/grpo.yaml", "tiny", FAST + ["train.steps=3", f"algorithm.advantage={{fn: {adv}}}"])
        train(r, str(tmp_path / adv), say=lambda *a: None)
        runs[adv] = _rows(tmp_path / adv)
    for a, b in zip(runs["grpo"], runs["test_token_grpo"]):
        assert a["loss"] == b["loss"] and a["reward_mean"] == b["reward_mean"] and a["grad_norm"] == b["grad_norm"]
    from safetensors.torch import load_file
    wa = load_file(tmp_path / "grpo" / "final" / "adapter_model.safetensors")
    wb = load_file(tmp_path / "test_token_grpo" / "final" / "adapter_model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_loop_builds_token_inputs_from_segment_rewards(tmp_path):
    """A PerSegment reward reaches the estimator as spans and per-token rewards whose sums are
    the weighted totals; the names and masks line up."""
    SEEN.clear()
    rewards = "rewards=[{fn: accuracy}, {fn: 'tests.test_credit:per_char_reward', weight: 2.0}]"
    r = load_recipe("recipes/grpo.yaml", "tiny", FAST + ["train.steps=1", rewards,
                                                         "algorithm.advantage={fn: test_record_token_inputs}"])
    train(r, str(tmp_path / "run"), say=lambda *a: None)
    assert SEEN["names"] == ["accuracy", "per_char_reward"]
    tok, mask, seg = SEEN["token"], SEEN["mask"], SEEN["segments"]
    assert tok.shape == mask.shape and tok.shape[:2] == SEEN["rewards"].shape
    assert torch.allclose(tok.sum(-1), SEEN["rewards"], atol=1e-5)
    tokenizer = build_tokenizer()
    for b in range(len(seg)):
        for g in range(len(seg[b])):
            assert seg[b][g][0] is None   # accuracy returned plain numbers
            spans = seg[b][g][1]          # one segment per character; tags are one token of many
            ids = SEEN["ids"][b, g].tolist()
            pieces = [tokenizer.decode([t]) if t not in (tokenizer.eos_token_id, tokenizer.pad_token_id) else ""
                      for t in ids]
            assert len(spans) == sum(map(len, pieces))
            got = tok[b, g].tolist()
            assert all(s <= e <= len(ids) for s, e, _ in spans)
            chars = [0.2 * len(p) for p in pieces]
            # token t carries 0.2 per character it decodes to, plus accuracy on the last policy token
            last = max(t for t in range(len(ids)) if mask[b, g, t])
            diff = [x - c for x, c in zip(got, chars)]
            assert all(abs(d) < 1e-5 for t, d in enumerate(diff) if t != last)
            assert diff[last] in (pytest.approx(0.0, abs=1e-5), pytest.approx(1.0, abs=1e-5))


def test_sequence_level_losses_refuse_token_advantages():
    from rlrecipes.errors import UserError
    over = ["algorithm.advantage={fn: test_token_grpo}"]
    with pytest.raises(UserError, match="one advantage per sequence") as e:
        load_recipe("recipes/grpo.yaml", "tiny", over + ["algorithm.loss={fn: gspo}"])
    assert e.value.where.endswith(": algorithm.loss.fn")
    # a refining sampler leaves stale reward parts: refused for an estimator that reads them,
    # allowed for one that reads only masks/ids of the refined rollout (BRPO's budget summaries)
    with pytest.raises(UserError, match="not supported with token-level credit") as e:
        load_recipe("recipes/grpo.yaml", "tiny", ["algorithm.advantage={fn: returns_to_go}",
                                                  "algorithm.sampler={fn: dynamic_sampling}"])
    assert e.value.where.endswith(": algorithm.sampler.fn")
    load_recipe("recipes/grpo.yaml", "tiny", over + ["algorithm.sampler={fn: dynamic_sampling}"])


class _Fn:
    def __init__(self, name, weight, parts):
        self.name, self.weight, self.parts = name, weight, parts


def _rank_batch(rank: int):
    """Rank r's two completions (one group): rank 1's are wider than rank 0's."""
    from rlrecipes.rollout.generate import Rollout
    tok = build_tokenizer()
    texts = [["ab", "abc"], ["abcde", "a"]][rank]
    ids = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
    T = max(map(len, ids))
    ids_NT = torch.tensor([r + [tok.pad_token_id] * (T - len(r)) for r in ids])
    mask_NT = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in ids])
    rollout = Rollout(torch.zeros(2, 1, dtype=torch.long), torch.ones(2, 1, dtype=torch.long), ids_NT, mask_NT,
                      texts, torch.zeros(2, dtype=torch.bool))
    parts = [[(i + 1, float(i + 1)) for i in range(len(t))] for t in texts]   # char i earns i + 1
    rewards_NK = torch.tensor([[float(sum(range(1, len(t) + 1))), 0.5] for t in texts])
    return tok, rollout, rewards_NK, [_Fn("dense", 1.0, parts), _Fn("plain", 2.0, [None, None])]


def _credit_rank(rank: int, port: int, out: str) -> None:
    import os
    from types import SimpleNamespace
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), CUDA_VISIBLE_DEVICES="")
    torch.set_num_threads(1)
    from accelerate import Accelerator

    from rlrecipes import credit
    acc = Accelerator(cpu=True)
    tok, rollout, rewards_NK, fns = _rank_batch(rank)
    ctx = SimpleNamespace(accelerator=acc, tokenizer=tok, reward_fns=fns)
    got = credit.step_inputs(ctx, rollout, rewards_NK, 2, {"token_rewards_BGT", "mask_BGT", "ids_BGT", "segments_BGK"})
    adv = got["token_rewards_BGT"] * 10   # an estimator's per-token output, cut back per rank
    got["mine"] = credit.this_rank(adv, 2, rank, 2, rollout.completion_ids_NT.shape[1])
    torch.save(got, f"{out}/rank-{rank}.pt")


def test_token_inputs_gather_over_two_ranks(tmp_path):
    """2 ranks (gloo) with completions of different widths: every rank sees the whole step, padded
    to the widest, equal to one process on both ranks' rows; `this_rank` hands each rank its rows
    at its own width."""
    import torch.multiprocessing as mp
    from types import SimpleNamespace

    from rlrecipes import credit
    from rlrecipes.rollout.generate import stack

    from .test_distributed import _free_port
    mp.start_processes(_credit_rank, args=(_free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank-{r}.pt", weights_only=False) for r in (0, 1)]
    batches = [_rank_batch(r) for r in (0, 1)]
    tok = batches[0][0]
    both = stack([b[1] for b in batches], tok.pad_token_id)
    fns = [_Fn("dense", 1.0, batches[0][3][0].parts + batches[1][3][0].parts), _Fn("plain", 2.0, [None] * 4)]
    one = credit.step_inputs(SimpleNamespace(accelerator=SimpleNamespace(num_processes=1), tokenizer=tok,
                                             reward_fns=fns), both, torch.cat([b[2] for b in batches]), 2,
                             {"token_rewards_BGT", "mask_BGT", "ids_BGT", "segments_BGK"})
    for got in ranks:
        for k in ("token_rewards_BGT", "mask_BGT", "ids_BGT"):
            assert torch.equal(got[k], one[k]), k
        assert got["segments_BGK"] == one["segments_BGK"]
    assert one["token_rewards_BGT"].shape == (2, 2, 6)   # "abcde" + EOS
    # "abc" earns 1, 2, 3 on its characters and 2 x 0.5 on its last policy token (EOS)
    assert one["token_rewards_BGT"][0, 1].tolist() == [1.0, 2.0, 3.0, 1.0, 0.0, 0.0]
    for r, got in enumerate(ranks):
        width = batches[r][1].completion_ids_NT.shape[1]
        assert torch.equal(got["mine"], one["token_rewards_BGT"][r, :, :width] * 10)
