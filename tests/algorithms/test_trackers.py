"""Stateful advantage estimators: SPO's per-prompt Beta tracker and its prioritized sampler
(algorithms_a §2), RiskPO's bundles and quantile tracker (algorithms_a §8). Worked examples
from the specs plus cases of our own; state round-trips through state_dict."""
import json

import torch

from rlrecipes.algorithms.trackers import SPO, RiskPO
from rlrecipes.rollout.generate import Rollout
from rlrecipes.rollout.samplers import Batch, SPOPrioritized
from rlrecipes.trainer import Updated


def _rollout(n, T=3):
    ones = torch.ones(n, T, dtype=torch.long)
    return Rollout(ones, ones, ones * 7, ones, ["x"] * n, torch.zeros(n, dtype=torch.bool))


def _updated(rows, policy_shift):
    """One completion per row; the 'policy' gives every token log-prob -0.5 + policy_shift[0]."""
    return Updated(row_ids=rows, group_size=1, rollout=_rollout(len(rows)), pad_id=0, gather=lambda t: t,
                   logprobs=lambda ro: torch.full(ro.completion_ids_NT.shape, -0.5 + policy_shift[0]))


def test_spo_offline_init_and_kl_adaptive_update_worked_example():
    # offline s = 3 of 8: N0 = 1 / (1 - 0.875) = 8; alpha0 = 8 * 3.5 / 9 = 3.1111, beta0 = 4.8889
    spo = SPO(offline_n=0)
    spo.init_values([0], [3], 8)
    assert abs(spo.alpha[0] - 3.1111) < 1e-4 and abs(spo.beta[0] - 4.8889) < 1e-4
    assert abs(spo.p_hat([0]).item() - 0.3889) < 1e-4
    shift = [0.0]
    spo(torch.tensor([[1.0]]), torch.tensor([0]))
    m = spo.after_update(_updated([0], shift))        # first visit: D = 0 -> rho = 1 -> clipped 0.96
    assert m["spo/D"] == 0 and abs(m["spo/rho"] - 0.96) < 1e-6
    spo.init_values([0], [3], 8)                      # back to the spec's starting values
    shift[0] = 0.03                                   # the policy moved: D = 0.03
    spo(torch.tensor([[1.0]]), torch.tensor([0]))
    m = spo.after_update(_updated([0], shift))
    # rho = 2^(-0.03 / 0.06) = 0.7071 -> clipped to 0.875; r = 1:
    # alpha = 0.875 * 3.1111 + 1 = 3.7222, beta = 0.875 * 4.8889 = 4.2778, p^ = 0.4653
    assert abs(m["spo/D"] - 0.03) < 1e-6 and abs(m["spo/rho"] - 0.875) < 1e-6
    assert abs(spo.alpha[0] - 3.7222) < 1e-4 and abs(spo.beta[0] - 4.2778) < 1e-4
    assert abs(spo.p_hat([0]).item() - 0.4653) < 1e-4


def test_spo_advantage_is_batch_normalised_reward_minus_tracked_value():
    # rewards [1,0,1,0], p^ = [0.3,0.3,0.8,0.5] -> raw [0.7,-0.3,0.2,-0.5]
    # -> (raw - mean) / (unbiased std + 1e-8) = [1.2552, -0.6044, 0.3254, -0.9763]
    spo = SPO(offline_n=0)
    for i, p in enumerate([0.3, 0.3, 0.8, 0.5]):
        spo.alpha[i], spo.beta[i] = p, 1 - p
    adv = spo(torch.tensor([[1.0], [0.0], [1.0], [0.0]]), torch.tensor([0, 1, 2, 3]))
    assert torch.allclose(adv.flatten(), torch.tensor([1.2552, -0.6044, 0.3254, -0.9763]), atol=1e-4)


def test_spo_constant_rho_groups_and_unseen_prompts():
    # own case: rho constant 0.875, G = 2 completions of an unseen prompt (alpha = beta = 0.5):
    # rewards 1 and 0 -> alpha = 0.875 * 0.5 + 1 = 1.4375, beta = 0.875 * 0.5 + 1 = 1.4375
    spo = SPO(offline_n=0, rho="constant")
    assert spo.p_hat([5]).item() == 0.5
    spo(torch.tensor([[1.0, 0.0]]), torch.tensor([5]))
    info = Updated(row_ids=[5], group_size=2, rollout=_rollout(2), pad_id=0, gather=lambda t: t,
                   logprobs=lambda ro: None)
    spo.after_update(info)
    assert spo.alpha[5] == spo.beta[5] == 1.4375


def test_spo_state_round_trip_keeps_values_and_stored_responses():
    spo = SPO(offline_n=0)
    spo(torch.tensor([[1.0], [0.0]]), torch.tensor([3, 4]))
    spo.after_update(_updated([3, 4], [0.0]))
    twin = SPO(offline_n=0)
    twin.load_state_dict(spo.state_dict())
    assert twin.alpha == spo.alpha and twin.beta == spo.beta and set(twin.stored) == {3, 4}
    shift = [0.06]   # D = 0.06 -> rho = 0.5 -> clipped 0.875, on both
    for s in (spo, twin):
        s(torch.tensor([[1.0], [1.0]]), torch.tensor([3, 4]))
        s.after_update(_updated([3, 4], shift))
    assert twin.alpha == spo.alpha


def _scoring_batch(passes):
    rows = [{"prompt": f"q{i}"} for i in range(len(passes))]
    seen = {}

    def score(prompts, rollout, rows_):
        out = []
        for p in prompts:   # the first passes[i] samples of prompt i pass
            seen[p] = seen.get(p, 0) + 1
            out.append([1.0 if seen[p] <= passes[int(p[1:])] else 0.0])
        return torch.tensor(out)

    return Batch(step=1, group_size=1, rows=[{}] * 4, rollout=_rollout(0), rewards_NK=torch.zeros(0, 1),
                 weights=[1.0], generate=lambda p: _rollout(len(p)), score=score, format=lambda q: q, pad_id=0,
                 question_of=lambda row: row["prompt"], train_rows=rows, train_prompts=[r["prompt"] for r in rows])


def test_spo_offline_values_by_sampling_and_from_a_file(tmp_path):
    spo = SPO(offline_n=8)
    batch = _scoring_batch([0, 3, 8])
    spo.refine(batch)
    assert abs(spo.p_hat([1]).item() - 3.5 / 9) < 1e-6          # alpha0 / (alpha0 + beta0) = (s + .5) / (n + 1)
    assert abs(spo.p_hat([0]).item() - 0.5 / 9) < 1e-6
    assert abs(batch.metrics["spo/offline_pass_rate"] - 11 / 24) < 1e-6
    spo.refine(batch)                                             # only once
    assert abs(batch.metrics["spo/offline_pass_rate"] - 11 / 24) < 1e-6
    path = tmp_path / "values.json"
    path.write_text(json.dumps({"q1": [1, 0, 0, 0, 1, 0, 0, 1], "unrelated": [1]}))
    from_file = SPO(offline_values=str(path))
    b = _scoring_batch([0, 0, 0])
    from_file.refine(b)
    assert from_file.alpha == {1: spo.alpha[1]} and b.metrics["spo/offline_found"] == 1 / 3


def test_spo_prioritized_sampler_worked_example_and_round_trip():
    # p^ = [0, 0.5, 0.9] -> weights sqrt(p(1-p)) + 0.05 = [0.05, 0.55, 0.35] -> probs [0.0526, 0.5789, 0.3684]
    spo = SPO(offline_n=0)
    for i, p in enumerate([0.0, 0.5, 0.9]):
        spo.alpha[i], spo.beta[i] = p, 1 - p
    sampler = SPOPrioritized(num_rows=3, seed=0, advantage=spo, pool_size=3)
    assert torch.allclose(sampler.weights([0, 1, 2]), torch.tensor([0.05, 0.55, 0.35], dtype=torch.float64))
    draws = torch.tensor(sum((sampler.next(30) for _ in range(200)), []))
    freq = torch.bincount(draws, minlength=3).float() / len(draws)
    assert torch.allclose(freq, torch.tensor([0.0526, 0.5789, 0.3684]), atol=0.02)
    assert len(set(sampler.next(2))) == 2                        # 2 of a pool of 3: without replacement
    twin = SPOPrioritized(num_rows=3, seed=0, advantage=spo, pool_size=3)
    twin.load_state_dict(sampler.state_dict())
    assert twin.next(5) == sampler.next(5)


def test_riskpo_worked_example_batch_quantiles_and_credit():
    # bundle of 2 questions x 5: X = [2,1,1,0,1]; q_d(0.2) = 0.8, q_u(0.9) = 1.6, std 0.7071
    # -> A = [0, -0.4849, -0.4849, -4.0406, -0.4849]; std credit (question std 0.5477) divides it
    r = torch.tensor([[1.0, 0, 1, 0, 0], [1, 1, 0, 0, 1]])
    expected = torch.tensor([0.0, -0.4849, -0.4849, -4.0406, -0.4849])
    adv = RiskPO(bundle_size=2, quantiles="batch")(r)
    assert torch.allclose(adv, expected.expand(2, 5), atol=1e-4)
    adv = RiskPO(bundle_size=2, quantiles="batch", credit="std")(r)
    assert torch.allclose(adv, torch.tensor([0.0, -0.8852, -0.8852, -7.3771, -0.8852]).expand(2, 5), atol=1e-3)
    adv = RiskPO(bundle_size=2, quantiles="batch", credit="score")(r)
    assert torch.allclose(adv[0], expected * torch.tensor([0.5, 1.5, 0.5, 1.5, 1.5]), atol=1e-4)


def test_riskpo_tracker_starts_from_the_batch_and_moves_by_the_pinball_gradient():
    risk = RiskPO(bundle_size=1, lr_q=0.1)
    r1 = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    first = risk(r1)                                  # no tracked values yet: batch quantiles
    assert torch.allclose(first, RiskPO(bundle_size=1, quantiles="batch")(r1))
    q0 = torch.quantile(torch.tensor([0.0, 1.0, 1.0, 1.0]), RiskPO.LEVELS)
    assert torch.allclose(risk.q, q0)
    risk(torch.tensor([[1.0, 1.0, 1.0, 1.0]]))        # every X = 1: fraction below q_a is 0 (q <= 1)
    assert torch.allclose(risk.q, q0 + 0.1 * RiskPO.LEVELS)
    twin = RiskPO(bundle_size=1)
    twin.load_state_dict(risk.state_dict())
    r3 = torch.tensor([[0.0, 1.0, 0.0, 1.0]])
    assert torch.equal(twin(r3), risk(r3))


def test_riskpo_bundle_with_equal_papers_has_no_signal_even_with_tracked_quantiles():
    risk = RiskPO(bundle_size=1)
    risk(torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]]))   # tracked quantiles now set
    assert risk.q is not None
    adv = risk(torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0]]))
    assert torch.equal(adv[0], torch.zeros(4))     # not -(w CVaR + RVaR) / (0 + 1e-6)
    assert adv[1].abs().max() < 100


def test_riskpo_bundles_sum_questions_and_a_single_paper_has_no_signal():
    # two bundles of two questions; G = 1 -> one paper per bundle: q_d = q_u = X -> A = 0
    adv = RiskPO(bundle_size=2, quantiles="batch")(torch.tensor([[1.0], [0.0], [1.0], [1.0]]))
    assert torch.equal(adv, torch.zeros(4, 1))
