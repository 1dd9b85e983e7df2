"""Checkpoints: atomic writes, keep_last/best, exact resume after SIGKILL, refusal of a changed
recipe, SIGTERM saving, the non-finite guard, and `rlrecipes eval`/`plot` on the result."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from rlrecipes import checkpoint
from rlrecipes.cli import app
from rlrecipes.config import load_recipe
from rlrecipes.run import train

from .conftest import FAST, train_and_resume

runner = CliRunner()


def _cli(*args):
    return [sys.executable, "-m", "rlrecipes", *args]


def _train_args(run_dir, *extra):
    args = ["train", "recipes/grpo.yaml", "--preset", "tiny", *sum((["-o", o] for o in FAST), [])]
    return args + list(extra) + (["--output-dir", str(run_dir)] if run_dir else [])


def _step_rows(run_dir):
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {m["step"]: m for m in lines if "loss" in m}


SLOW = ["-o", "train.steps=8", "-o", "checkpoint.every=4", "-o", "eval.at_start=false",
        "-o", "rewards=[{fn: accuracy}, {fn: 'tests.user_rewards:slow_length_reward', weight: 0.01}]"]


@pytest.mark.parametrize("engine", ["hf", "fast"])
def test_sigkill_then_resume_reproduces_the_uninterrupted_run(tmp_path, engine):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    slow = SLOW + ["-o", f"generation.engine={engine}"]
    full = tmp_path / "full"
    subprocess.run(_cli(*_train_args(full, *slow)), check=True, capture_output=True, env=env, timeout=300)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(*_train_args(killed, *slow)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    marker = checkpoint.step_dir(killed, 4) / "trainer_state.json"
    deadline = time.time() + 240
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert marker.exists()
    assert not (killed / "summary.json").exists() or "finished" not in (killed / "summary.json").read_text()
    done = checkpoint.latest_checkpoint(killed)
    assert done is not None and json.loads((done / "trainer_state.json").read_text())["step"] < 8
    resumed = subprocess.run(_cli(*_train_args(None, *slow, "--resume", str(killed))),
                             capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = _step_rows(full), _step_rows(killed)
    assert sorted(b) == list(range(1, 9))
    for step in range(5, 9):
        assert (a[step]["loss"], a[step]["reward_mean"]) == (b[step]["loss"], b[step]["reward_mean"]), step
    assert a[8]["kl"] == b[8]["kl"]


def test_crash_between_write_and_rename_keeps_previous_checkpoint(tmp_path, monkeypatch):
    r = load_recipe("recipes/grpo.yaml", "tiny", FAST + ["train.steps=2", "checkpoint.every=1",
                                                         "eval.at_start=false", "eval.at_end=false"])
    train(r, str(tmp_path / "run"), say=lambda *a: None)
    run = tmp_path / "run"
    assert [p.name for p in checkpoint.complete_checkpoints(run)] == ["step-000001", "step-000002"]
    before = (checkpoint.step_dir(run, 2) / "optimizer.pt").read_bytes()

    def crash(src, dst):
        raise OSError("simulated crash before rename")

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)

    class Saveable(torch.nn.Linear):
        def save_pretrained(self, path):
            path.mkdir()
            torch.save(self.state_dict(), path / "weights.pt")

    monkeypatch.setattr(checkpoint.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        checkpoint.save(run, 3, Saveable(2, 2), opt, sched, {}, {}, keep_last=5)
    monkeypatch.undo()
    assert checkpoint.latest_checkpoint(run).name == "step-000002"  # the half-written one is ignored
    assert (checkpoint.step_dir(run, 2) / "optimizer.pt").read_bytes() == before
    assert list((run / "checkpoints").glob(".tmp-*"))  # left behind, not mistaken for complete
    checkpoint.save(run, 3, Saveable(2, 2), opt, sched, {}, {}, keep_last=1)
    assert not list((run / "checkpoints").glob(".tmp-*"))  # the next save cleans it up
    assert [p.name for p in checkpoint.complete_checkpoints(run)] == ["step-000003"]  # keep_last=1


def test_resume_refuses_a_changed_recipe_and_a_finished_run(tmp_path):
    run = tmp_path / "run"
    assert runner.invoke(app, _train_args(run, "-o", "checkpoint.every=2")).exit_code == 0
    changed = runner.invoke(app, _train_args(None, "-o", "train.lr=0.5", "-o", "train.steps=4",
                                             "--resume", str(run)))
    assert changed.exit_code == 2
    assert "train.lr: the run used 0.003, the recipe now says 0.5" in changed.output.replace("\n", "")
    finished = runner.invoke(app, _train_args(None, "--resume", str(run)))
    assert finished.exit_code == 2 and "nothing to do" in finished.output
    more = runner.invoke(app, _train_args(None, "-o", "train.steps=3", "--resume", str(run)))
    assert more.exit_code == 0, more.output
    assert sorted(_step_rows(run)) == [1, 2, 3]


def test_sigterm_saves_a_checkpoint_and_exits_non_zero(tmp_path):
    run = tmp_path / "run"
    args = _train_args(run, "-o", "train.steps=50", "-o", "eval.at_start=false", "-o",
                       "rewards=[{fn: 'tests.user_rewards:slow_length_reward'}]")
    proc = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "--resume" in err and "Traceback" not in err
    saved = checkpoint.latest_checkpoint(run)
    assert saved is not None and json.loads((saved / "trainer_state.json").read_text())["step"] < 50


def test_non_finite_loss_skips_updates_then_stops(tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, _train_args(run, "-o", "train.steps=10", "-o", "train.max_skipped_steps=2",
                                            "-o", "rewards=[{fn: 'tests.user_rewards:infinite_reward'}]"))
    assert result.exit_code == 3, result.output
    assert "not finite for 2 consecutive steps" in result.output.replace("\n", "")
    rows = _step_rows(run)
    assert sorted(rows) == [1, 2] and all(r["skipped_updates"] == r["updates"] for r in rows.values())
    assert checkpoint.latest_checkpoint(run).name == "step-000002"
    from safetensors.torch import load_file
    weights = load_file(checkpoint.latest_checkpoint(run) / "model" / "adapter_model.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_eval_command_best_compare_and_plot(tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, _train_args(run, "-o", "train.steps=4", "-o", "eval.every=2",
                                            "-o", "checkpoint.best_metric=eval/pass@1"))
    assert result.exit_code == 0, result.output
    assert (run / "checkpoints" / "best").is_symlink()
    out = runner.invoke(app, ["eval", str(run), "--checkpoint", "best", "--compare", "base", "--samples", "2",
                              "--k", "1,2", "--limit", "6", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["problems"] == 6 and {"pass@1", "pass@2", "maj@2", "mean@n"} <= set(data)
    assert data["gain"]["pass@1"] == pytest.approx(data["pass@1"] - data["base"]["pass@1"])
    assert json.loads((run / "eval" / "best.json").read_text())["problems"] == 6
    base = runner.invoke(app, ["eval", "recipes/grpo.yaml", "--preset", "tiny", "--checkpoint", "base",
                               "--samples", "2", "--limit", "4", "-o", "data.test_size=16"])
    assert base.exit_code == 0 and "pass@1" in base.output
    wrong = runner.invoke(app, ["eval", "recipes/grpo.yaml", "--checkpoint", "latest"])
    assert wrong.exit_code == 2 and "needs a run directory" in wrong.output
    assert runner.invoke(app, ["plot", str(run)]).exit_code == 0
    assert {p.name for p in (run / "plots").glob("*.png")} >= {"reward.png", "kl.png", "eval.png"}


def test_stateful_components_round_trip_through_a_checkpoint(tmp_path, monkeypatch):
    from rlrecipes.registry import register
    from rlrecipes.trainer import Components

    @register("regularizer", "_test_counter")
    class Counter:
        """Counts its calls: the kind of state an adaptive KL controller keeps."""

        def __init__(self, coef: float = 0.0):
            self.coef, self.calls = coef, 0

        def __call__(self, mask_NT):
            self.calls += 1
            return mask_NT * self.coef, {}

        def state_dict(self):
            return {"calls": self.calls}

        def load_state_dict(self, state):
            self.calls = state["calls"]

    r = load_recipe("recipes/grpo.yaml", "tiny", ["algorithm.regularizers=[{fn: _test_counter, coef: 0.5}]"])
    comp = Components(r, num_rows=10)
    counter = comp.stateful()["regularizer1"]  # regularizer0 is the KL term (beta > 0)
    counter.calls = 7
    comp.sampler.next(13)  # past the end of an epoch
    model = torch.nn.Linear(2, 2)
    model.save_pretrained = lambda path: (path.mkdir(), torch.save(model.state_dict(), path / "w.pt"))
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    saved = checkpoint.save(tmp_path, 1, model, opt, sched, comp.stateful(), {}, keep_last=1)
    fresh = Components(r, num_rows=10)
    import rlrecipes.model as model_mod
    monkeypatch.setattr(model_mod, "load_weights", lambda m, p: None)  # a bare Linear, not an HF model
    checkpoint.load(saved, model, opt, sched, fresh.stateful())
    assert fresh.stateful()["regularizer1"].calls == 7
    assert fresh.sampler.state_dict() == comp.sampler.state_dict() == {"epoch": 1, "pos": 3}
    assert fresh.sampler.next(5) == comp.sampler.next(5)


def test_r2vpo_dual_variable_is_checkpointed_state():
    from rlrecipes.trainer import Components
    comp = Components(load_recipe("recipes/r2vpo.yaml", "tiny"), num_rows=10)
    assert "loss" in comp.stateful() and comp.stateful()["loss"].state_dict() == {"lambda": 0.0, "buffer": []}
    assert comp.replayers == [comp.loss] and comp.loss.replay == 1   # the tiny preset replays one batch


def test_spo_resume_reproduces_the_uninterrupted_run(tmp_path):
    """SPO keeps per-prompt values, stored responses and a sampler generator: resuming from the
    step-2 checkpoint gives steps 3-4 exactly as the uninterrupted run."""
    overrides = FAST + ["data.train_size=12", "algorithm.advantage.offline_n=2", "train.steps=4",
                        "checkpoint.every=2", "checkpoint.keep_last=5", "eval.at_start=false", "eval.at_end=false"]
    full, cut = train_and_resume(load_recipe("recipes/spo.yaml", "tiny", overrides), tmp_path, cut_at=4)
    a, b = _step_rows(full), _step_rows(cut)
    assert sorted(b) == [1, 2, 3, 4]
    for step in (3, 4):
        for key in ("loss", "reward_mean", "spo/p_hat", "spo/rho", "spo/D"):
            assert a[step][key] == b[step][key], (step, key)


def test_optimizer_pt_in_both_layouts_loads(tmp_path):
    """`optimizer.pt` as a plain `state_dict()` (unsharded runs) and as the full, name-keyed state
    sharded runs wrote before their optimizer went to `optimizer/` shards: both restore the same
    AdamW moments."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    from rlrecipes.sharding import load_optimizer
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    for _ in range(2):
        model(torch.randn(5, 3)).square().sum().backward()
        opt.step()
        opt.zero_grad()
    named = get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True))
    assert all(isinstance(k, str) for k in named["state"])
    for layout, state in (("plain", opt.state_dict()), ("named", named)):
        folder = tmp_path / layout
        folder.mkdir()
        torch.save(state, folder / "optimizer.pt")
        fresh = torch.optim.AdamW(model.parameters(), lr=0.1)
        load_optimizer(model, fresh, folder)
        for p in model.parameters():
            for key in ("exp_avg", "exp_avg_sq", "step"):
                assert torch.equal(fresh.state[p][key], opt.state[p][key]), (layout, key)
