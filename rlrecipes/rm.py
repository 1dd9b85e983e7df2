"""The `rm` stage: train a reward model in the project, so tiny presets score with a learned RM.

    stages:
      - {kind: rm, steps: 300, lr: 1.0e-3, batch_size: 64,
         rm: {data: {fn: safe_arith_aspects}, loss: regression, labels: [politeness, safety]}}
      - {kind: rl}
    rewards:
      - {fn: reward_model, model: rm, head: safety}

The RM is `AutoModelForSequenceClassification` (a new score head, one output per label) on
`rm.init`: the recipe's base (`tiny`: a Qwen2 of `rm.tiny`'s shape), this run's SFT model,
the previous rm stage's output (`rm`: pre-train then fine-tune, as POLAR does) or a hub id /
path. A registered `rm_data` builder makes examples from drawn task rows:
- bradley_terry: {prompt, chosen, rejected, ...}; loss -log sigmoid(r(chosen) - r(rejected))
  (Bradley-Terry, as InstructGPT's RM, arXiv 2203.02155 eq. 1);
- regression: {prompt, completion, scores: [one per label, None where unlabelled]}; mean squared
  error over the labelled entries (Safe-MOGRPO's multi-label regressor, arXiv 2503.21819).
Other keys of an example fill the template (e.g. `{reference}`). The model is written atomically
to `<run>/rm-model` with `rlrecipes_rm.json` (labels, template, loss, held-out scores), which
the `reward_model` reward reads.
"""
from __future__ import annotations

import math
import random
from pathlib import Path

import torch
import torch.nn.functional as F

from .errors import UserError
from .registry import get
from .rewards.reward_model import META, fill, scores


def init_path(recipe, cfg, run_dir: Path, where: str = "stages.rm") -> str:
    """The directory or hub id the RM starts from."""
    from .model import resolve_path
    if cfg.init == "base":
        model_cfg = recipe.model if cfg.tiny is None else recipe.model.model_copy(update={"tiny": cfg.tiny})
        return resolve_path(model_cfg)
    if cfg.init in ("sft", "rm"):
        path = run_dir / f"{cfg.init}-model"
        if not (path / "config.json").exists():
            raise UserError(f"{where}.init", f"init: {cfg.init} but no earlier stage wrote {path}",
                            f"put an {cfg.init} stage before this one")
        return str(path)
    return cfg.init


def load_rm(path: str, labels: list[str], device, seed: int, trust_remote_code: bool = False,
            where: str = "stages.rm"):
    """(model, tokenizer): a sequence classifier with len(labels) outputs; a new score head is
    initialised from `seed` (the global RNG untouched)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=len(labels), id2label=dict(enumerate(labels)),
                label2id={name: i for i, name in enumerate(labels)}, dtype=torch.float32,
                trust_remote_code=trust_remote_code, ignore_mismatched_sizes=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"{where}.init", f"cannot load {path!r} as a reward model: {str(exc).splitlines()[0]}",
                        "a hub id needs the network; or give a local directory") from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.config.pad_token_id = tok.pad_token_id
    return model.to(device), tok


def texts(template: str, examples: list[dict], key: str, where: str = "stages.rm") -> list[str]:
    """The RM inputs: `template` with each example's `key` text as {completion}."""
    return [fill(template, f"{where}.template", **{**ex, "completion": ex[key]}) for ex in examples]


def bradley_terry(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """-mean log sigmoid(r_chosen - r_rejected) (InstructGPT arXiv 2203.02155 eq. 1; POLAR's
    pre-training and fine-tuning loss, arXiv 2507.05197 §3)."""
    return -F.logsigmoid(chosen - rejected).mean()


def masked_mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the labelled entries (NaN targets: no label for that head)."""
    labelled = ~torch.isnan(target)
    return (out - torch.nan_to_num(target)).pow(2)[labelled].sum() / labelled.sum().clamp(min=1)


def rm_loss(cfg, model, tok, examples: list[dict], max_length: int = 1024, chunk: int = 64,
            where: str = "stages.rm") -> tuple[torch.Tensor, dict]:
    """(loss, metrics) over `examples`, forwarded `chunk` texts at a time."""
    device = next(model.parameters()).device

    def forward(strings):   # the reward's own batched scoring, with gradients when training
        return scores(model, tok, strings, chunk, max_length)

    if cfg.loss == "bradley_terry":
        chosen = forward(texts(cfg.template, examples, "chosen", where))[:, 0]
        rejected = forward(texts(cfg.template, examples, "rejected", where))[:, 0]
        return bradley_terry(chosen, rejected), {"rm_acc": (chosen > rejected).float().mean().item()}
    out = forward(texts(cfg.template, examples, "completion", where))
    target = torch.tensor([[math.nan if v is None else float(v) for v in ex["scores"]] for ex in examples],
                          device=device)
    labelled = ~torch.isnan(target)
    mae = ((out - torch.nan_to_num(target)).abs() * labelled).sum(0) / labelled.sum(0).clamp(min=1)
    return masked_mse(out, target), {f"rm_mae/{name}": m.item() for name, m in zip(cfg.labels, mae)}


def make_examples(cfg, builder, rows: list[dict], rng: random.Random, task, where: str) -> list[dict]:
    examples = builder(rows=rows, rng=rng, task=task, **cfg.data.params)
    need = ("chosen", "rejected") if cfg.loss == "bradley_terry" else ("completion", "scores")
    for ex in examples:
        missing = [k for k in ("prompt", *need) if k not in ex]
        if missing:
            raise UserError(where, f"rm_data {cfg.data.fn!r} gave examples without {', '.join(missing)} "
                            f"(loss {cfg.loss} needs prompt, {', '.join(need)})")
        if cfg.loss == "regression" and len(ex["scores"]) != len(cfg.labels):
            raise UserError(where, f"rm_data {cfg.data.fn!r} gives {len(ex['scores'])} scores per example "
                            f"for {len(cfg.labels)} labels", "list one label per score")
    return examples


def run_rm(recipe, stage, index: int, run_dir: Path, task, train_rows, test_rows, device,
           log=lambda step, metrics: None, say=print) -> dict:
    """Train the stage's reward model and write it to `<run>/rm-model`; returns its held-out
    scores (also in rlrecipes_rm.json)."""
    cfg, where = stage.rm, f"stages[{index}].rm"
    builder = get("rm_data", cfg.data.fn, f"{where}.data.fn")
    seed = recipe.train.seed + 7 * (index + 1)
    model, tok = load_rm(init_path(recipe, cfg, run_dir, where), cfg.labels, device, seed,
                         recipe.model.trust_remote_code, where)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=stage.lr or recipe.train.lr, weight_decay=0.0)
    rng = random.Random(seed)
    for step in range(1, (stage.steps or 0) + 1):
        rows = [train_rows[rng.randrange(len(train_rows))] for _ in range(stage.batch_size)]
        loss, metrics = rm_loss(cfg, model, tok, make_examples(cfg, builder, rows, rng, task, where), where=where)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, recipe.train.max_grad_norm or float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        log(step, {**metrics, "rm_loss": loss.item()})
    model.eval()
    held_out = make_examples(cfg, builder, test_rows[:cfg.eval_size], random.Random(seed + 1), task, where)
    with torch.no_grad():   # one pass over all held-out examples: exact means, not means of batches
        loss, metrics = rm_loss(cfg, model, tok, held_out, where=where)
        scores = {**metrics, "rm_loss": loss.item()}
    say(f"reward model (held out, {len(held_out)} examples): "
        + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    meta = {"labels": cfg.labels, "template": cfg.template, "loss": cfg.loss, "data": cfg.data.fn,
            "steps": stage.steps or 0, "held_out": scores}
    save_rm(model, tok, meta, run_dir / "rm-model")
    return scores


def save_rm(model, tok, meta: dict, path: Path) -> None:
    """Write atomically (model.save_atomically) and drop the reward's cached copy of `path`."""
    from .model import save_atomically
    from .rewards.reward_model import forget
    save_atomically(model, tok, path, {META: meta})
    forget(path)
