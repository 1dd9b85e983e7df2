"""Learned reward models: a Hugging Face sequence classifier scores each (prompt, completion).

    rewards:
      - {fn: reward_model, model: /models/my-rm}   # a hub id or local path (loaded outside timeout_s)
      - {fn: reward_model, model: rm, reference_column: reference}  # the model this run's rm stage trained

`model` is a hub id, a local directory, or `rm`: `<run>/rm-model`, written by the recipe's `rm`
stage (rlrecipes/rm.py), which also stores the input template and head names beside the weights
(`rlrecipes_rm.json`), so the reward reads its input exactly as the model was trained on it.
One forward serves every head: K reward entries with different `head`s on the same model and
completions cost one batched, no-grad pass (memoised per step). bf16 on CUDA, fp32 on CPU.

The model is `AutoModelForSequenceClassification` (its score head on the last non-pad token), so
any RM with that interface plugs in: one head (Bradley-Terry RMs: the logit is the reward) or K
(multi-aspect regressors, Safe-MOGRPO arXiv 2503.21819 §3). Ordering is what a BT reward means;
GRPO's group normalisation removes its offset (POLAR arXiv 2507.05197 README: "only the ordering
matters").
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import torch

from ..errors import UserError
from ..registry import register

META = "rlrecipes_rm.json"
RUN_RM = "rm"   # `model: rm`: the reward model this run's rm stage trained
_MODELS: dict[tuple, tuple] = {}   # (path, device, dtype) -> (model, tokenizer, meta)
_LAST: dict[str, tuple[str, torch.Tensor]] = {}   # path -> (key of the inputs, scores_NK)


def forget(path) -> None:
    """Drop a model and its scores from the caches (the rm stage rewrites `path`)."""
    for key in [k for k in _MODELS if k[0] == str(path)]:
        del _MODELS[key]
    _LAST.pop(str(path), None)


def rm_meta(path: Path) -> dict:
    """What the rm stage wrote beside a model (labels, template, ...); {} for other models."""
    file = Path(path) / META
    return json.loads(file.read_text()) if file.exists() else {}


def resolve(model: str, run_dir) -> str:
    if model != RUN_RM:
        return model
    if run_dir is None:
        raise UserError("rewards.model", "model: rm names the reward model of this run's rm stage; "
                        "there is no run here", "give a hub id or a local directory")
    path = Path(run_dir) / "rm-model"
    if not (path / "config.json").exists():
        raise UserError("rewards.model", f"model: rm but {path} holds no trained reward model",
                        "add an rm stage before the rl stage (stages: [{kind: rm, ...}, {kind: rl}])")
    return str(path)


def load(path: str, device: torch.device, trust_remote_code: bool = False):
    """(model, tokenizer, meta), loaded once per process and kept."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    key = (path, str(device), dtype)
    if key not in _MODELS:
        try:
            tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            model = AutoModelForSequenceClassification.from_pretrained(
                path, dtype=dtype, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            raise UserError("rewards.model", f"cannot load reward model {path!r}: {str(exc).splitlines()[0]}",
                            "a hub id needs the network; or give a local directory") from exc
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tok.pad_token_id
        # the classifier scores the last token that is not config.pad_token_id: pad with that id
        # (a Llama-style RM may name pad 0 in its config while its tokenizer has no pad at all)
        _MODELS[key] = (model.to(device).eval().requires_grad_(False), tok, rm_meta(Path(path)))
    return _MODELS[key]


def encode(tokenizer, texts: list[str], max_length: int, device, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids right-padded with `pad` (the model's config.pad_token_id, where its score head looks
    for the last real token) and the mask; a text longer than `max_length` keeps its end."""
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"][-max_length:] for t in texts]
    width = max(map(len, ids))
    out = torch.tensor([s + [pad] * (width - len(s)) for s in ids], device=device)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in ids], device=device)
    return out, mask


def scores(model, tokenizer, texts: list[str], batch_size: int, max_length: int) -> torch.Tensor:
    """The model's K outputs for each text, float32 [N, K], in batches."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(texts), batch_size):
        ids, mask = encode(tokenizer, texts[start:start + batch_size], max_length, device, model.config.pad_token_id)
        out.append(model(input_ids=ids, attention_mask=mask).logits.float())
    return torch.cat(out)


def check_template(template: str, field: str) -> None:
    """A template scores the completion: it must name {completion} (else every completion of a
    prompt would get the same score)."""
    if "{completion}" not in template:
        raise UserError(field, f"{template!r} has no {{completion}}", "e.g. \"{prompt}{completion}\"")


def fill(template: str, field: str, **values) -> str:
    try:
        return template.format(**values)
    except KeyError as exc:
        raise UserError(field, f"template names {{{exc.args[0]}}}, which is not an input",
                        f"inputs: {', '.join(sorted(values))}") from None
    except (IndexError, ValueError) as exc:   # "{0}", a lone brace
        raise UserError(field, f"template {template!r} does not format: {exc}",
                        "name inputs in braces, write a literal brace as {{ or }}") from None


def head_index(head: int | str, labels: list[str], k: int) -> int:
    if isinstance(head, str):
        if head not in labels:
            raise UserError("rewards.head", f"the reward model has no head {head!r}",
                            f"its heads: {', '.join(labels) or 'unnamed (give an index)'}")
        return labels.index(head)
    if not 0 <= head < k:
        raise UserError("rewards.head", f"head {head} out of range: the reward model has {k}")
    return head


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def prepare(model: str, trust_remote_code: bool = False, run_dir=None, **_) -> None:
    """Load the model before the first call (RewardFn runs this outside `timeout_s`, so loading a
    large RM does not count against the scoring deadline)."""
    load(resolve(model, run_dir), _device(), trust_remote_code)


@register("reward", "reward_model")
def reward_model(prompts, completions, model: str, head: int | str = 0, template: str | None = None,
                 reference_column: str | None = None, squash: Literal["none", "sigmoid"] = "none",
                 batch_size: int = 32, max_length: int = 1024, trust_remote_code: bool = False,
                 run_dir=None, **columns) -> list[float]:
    """Head `head` (an index or a name from the RM's labels) of a sequence classifier's output on
    `template` filled with the prompt, the completion and, with `reference_column`, that dataset
    column as `{reference}` (POLAR's reference trajectory, arXiv 2507.05197 §2). `template` defaults to
    the one the rm stage trained with, else "{prompt}{completion}". `squash: sigmoid` maps a logit
    to (0, 1)."""
    path = resolve(model, run_dir)
    net, tok, meta = load(path, _device(), trust_remote_code)
    template = template or meta.get("template", "{prompt}{completion}")
    labels = meta.get("labels") or [net.config.id2label.get(i, str(i)) for i in range(net.config.num_labels)]
    k = head_index(head, labels, net.config.num_labels)
    refs = columns.get(reference_column) if reference_column else None
    if reference_column and refs is None:
        raise UserError("rewards.reference_column", f"no dataset column {reference_column!r} to use as the reference")
    if reference_column and "{reference}" not in template:
        raise UserError("rewards.reference_column", f"the template {template!r} has no {{reference}}",
                        "put {reference} in rewards.template (or in the rm stage's)")
    check_template(template, "rewards.template")
    texts = [fill(template, "rewards.template", prompt=p, completion=c,
                  **({"reference": refs[i]} if refs is not None else {}))
             for i, (p, c) in enumerate(zip(prompts, completions))]
    key = hashlib.sha256("\x00".join([str(max_length), *texts]).encode()).hexdigest()
    if _LAST.get(path, ("",))[0] != key:   # the other heads of this step reuse the forward
        with torch.no_grad():
            _LAST[path] = (key, scores(net, tok, texts, batch_size, max_length))
    values = _LAST[path][1][:, k]
    if squash == "sigmoid":
        values = values.sigmoid()
    return values.tolist()


reward_model.prepare = prepare
