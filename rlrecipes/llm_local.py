"""The `local_hf` LLM client: a causal LM run in this process (a judge, a summariser, an
experience writer that is not the policy). The contract and the other clients: `rlrecipes/llm.py`."""
from __future__ import annotations

from typing import Literal

from .errors import UserError
from .llm import LLM, as_messages, as_text
from .registry import register

_HF: dict[tuple, tuple] = {}   # (path, device, dtype, trust_remote_code) -> (model, tokenizer)


@register("llm", "local_hf")
class LocalHF(LLM):
    """A causal LM run here. `model`: hub id, local directory, or `tiny` (the offline model)."""

    def __init__(self, model: str, temperature: float = 0.0, top_p: float = 1.0, max_new_tokens: int = 256,
                 batch_size: int = 16, chat_template: Literal["auto", "always", "never"] = "auto",
                 dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto", device: str | None = None,
                 trust_remote_code: bool = False, seed: int = 0, where: str = "llm"):
        import torch
        for name, value, ok, rule in (("temperature", temperature, temperature >= 0, ">= 0"),
                                      ("max_new_tokens", max_new_tokens, max_new_tokens > 0, "> 0"),
                                      ("batch_size", batch_size, batch_size > 0, "> 0"),
                                      ("top_p", top_p, 0 < top_p <= 1, "in (0, 1]")):
            if not ok:
                raise UserError(f"{where}.{name}", f"must be {rule}, got {value!r}")
        self.where, self.name = where, model
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = (getattr(torch, dtype) if dtype != "auto"
                      else torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.sampling = {"temperature": temperature, "max_tokens": max_new_tokens}
        self.top_p, self.batch_size, self.seed, self.calls = top_p, batch_size, seed, 0
        self.model, self.tokenizer = _load_hf(model, self.device, self.dtype, trust_remote_code, where)
        has_template = getattr(self.tokenizer, "chat_template", None) is not None
        if chat_template == "always" and not has_template:
            raise UserError(f"{where}.chat_template", f"the tokenizer of {model!r} has no chat template",
                            "use chat_template: auto or never")
        self.use_template = has_template and chat_template != "never"

    def render(self, prompt) -> str:
        if not self.use_template:
            return as_text(prompt)
        return self.tokenizer.apply_chat_template(as_messages(prompt), tokenize=False, add_generation_prompt=True)

    def complete(self, prompts: list, **overrides) -> list[str]:
        opts = {**self.sampling, **self._overrides(overrides)}
        texts = [self.render(p) for p in prompts]
        return [reply for start in range(0, len(texts), self.batch_size)
                for reply in self._generate(texts[start:start + self.batch_size], opts, start)]

    def _generate(self, texts: list[str], opts: dict, start: int) -> list[str]:
        import torch
        from .rollout.generate import completion_mask, decode, encode_prompts
        tok = self.tokenizer
        ids, mask = encode_prompts(tok, texts, self.device)
        sample = opts["temperature"] > 0
        kwargs = dict(do_sample=True, temperature=opts["temperature"], top_p=self.top_p) if sample \
            else dict(do_sample=False, temperature=None, top_p=None, top_k=None)
        self.calls += 1
        # seeded per call and outside the global RNG: a judge must not change the policy's samples
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            seed = opts["seed"] * 1_000_003 + start if opts.get("seed") is not None else self.seed * 1_000_003 + self.calls
            torch.manual_seed(seed)
            out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=opts["max_tokens"],
                                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **kwargs)
        new = out[:, ids.shape[1]:]
        if new.shape[1] == 0:
            return [""] * len(texts)
        return decode(tok, new, completion_mask(new, tok.eos_token_id))


def _load_hf(name: str, device, dtype, trust_remote_code: bool, where: str):
    """(model, tokenizer), loaded once per process and kept (eval mode, no grad)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path = name
    if name == "tiny":
        from .tiny import tiny_path
        path = str(tiny_path())
    key = (path, str(device), str(dtype), trust_remote_code)
    if key not in _HF:
        try:
            tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            raise UserError(f"{where}.model", f"cannot load {path!r}: {str(exc).splitlines()[0]}",
                            "a hub id needs the network; or give a local directory") from None
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        _HF[key] = (model.to(device).eval().requires_grad_(False), tok)
    return _HF[key]
