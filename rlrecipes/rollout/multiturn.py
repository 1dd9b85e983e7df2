"""Multi-turn rollouts with a tool (Search-R1 protocol, arXiv 2503.09516; OTC-PO 2504.14870).

Every sequence of the batch generates until it closes a tool call (`</search>` by default) or
ends (EOS, token budget). The query between the call tags goes to the tool, its answer is
appended as `<information>...</information>`, and generation continues from the whole context,
all sequences still active in one batched call per turn (the fast engine prefills each prompt
once per turn for all its rows and keeps its cache once; each row's turns so far follow it).
At most `max_turns` results are given; a further call ends the sequence. Observation tokens are
part of the context (attention) but not of the loss or the KL: `Rollout.loss_mask_NT` is 1 only
on tokens the policy sampled. Per-sequence stats: `calls`, `turns` (generate rounds) and
`obs_tokens`.
"""
from __future__ import annotations

import torch

from ..registry import construct, get
from .engine import fast_generate, fast_supported, sample
from .generate import Rollout, decode, generate


TOOL_STATS = ("calls", "turns", "obs_tokens")   # per-sequence counts in Rollout.stats (eval: tool_<name>)


def _left_pad(seqs: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=device)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=device)
    return ids, mask


def _turn(tokens: list[int], eos: int, pad: int, is_call) -> tuple[list[int], bool]:
    """(this turn's tokens, whether it ended with EOS). `generate` pads a row that stopped at a
    call tag; when the pad token is the EOS token, an EOS right after a call tag is padding."""
    if eos in tokens:
        head = tokens[:tokens.index(eos)]
        return (head, False) if is_call(head) else (head + [eos], True)
    while tokens and tokens[-1] == pad:
        tokens = tokens[:-1]
    return tokens, False


class ToolRollouts:
    """`generate`'s drop-in for recipes with `generation.tools`: (model, tokenizer, prompts, gen,
    device, repeat) -> Rollout."""

    def __init__(self, spec, task=None, engine: str = "hf"):
        cls = get("tool", spec.tool.fn, "generation.tools.tool.fn")
        self.tool = construct(cls, "generation.tools.tool", task=task, **spec.tool.params)
        self.max_turns, self.call, self.result = spec.max_turns, spec.call, spec.result
        self.engine = engine

    def run_tool(self, text: str) -> str:
        query = text[text.rfind(self.call[0]) + len(self.call[0]):text.rfind(self.call[1])]
        try:
            answer = self.tool(query)
        except Exception as exc:  # a tool bug is an observation, not a crash of the run
            answer = f"error: {type(exc).__name__}: {exc}"
        return f"{self.result[0]}{answer}{self.result[1]}"

    def _generate(self, model, tokenizer, rows: list[int], context, resp, repeat: int, budget: int, gen,
                  close: list[int], is_call, device) -> torch.Tensor:
        """One turn's new tokens for the active `rows` (ascending; row i samples from prompt
        i // repeat): until EOS or the closing call tag. The fast engine prefills each prompt
        once for its active rows and keeps its cache once; their turns so far are each row's own
        suffix. `generate` takes each row's whole context."""
        eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
        if self.engine == "fast" and fast_supported(model) is None:
            stop = {"stop_ids": [eos, close[0]]} if len(close) == 1 else {"stop_ids": [eos], "stop_text": is_call}
            prompt_of, counts = torch.unique_consecutive(torch.tensor(rows) // repeat, return_counts=True)
            ids, mask = _left_pad([context[int(g) * repeat] for g in prompt_of], pad, device)
            suffix = _left_pad([resp[i] for i in rows], pad, device) if any(resp[i] for i in rows) else None
            return sample(model, ids, mask, counts.to(device), budget, pad_id=pad, temperature=gen.temperature,
                          top_k=gen.top_k, top_p=gen.top_p, cuda_graphs=gen.cuda_graphs, suffix=suffix, **stop)
        ids, mask = _left_pad([context[i] + resp[i] for i in rows], pad, device)
        stop = {"eos_token_id": [eos, close[0]]} if len(close) == 1 else \
            {"eos_token_id": eos, "stop_strings": [self.call[1]], "tokenizer": tokenizer}
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=gen.temperature,
                             top_p=gen.top_p, top_k=gen.top_k, max_new_tokens=budget, pad_token_id=pad, **stop)
        return out[:, ids.shape[1]:]

    @torch.no_grad()
    def __call__(self, model, tokenizer, prompts: list[str], gen, device, repeat: int = 1) -> Rollout:
        prompts = [p for p in prompts for _ in range(repeat)]
        N, eos, pad = len(prompts), tokenizer.eos_token_id, tokenizer.pad_token_id
        close = tokenizer(self.call[1], add_special_tokens=False)["input_ids"]
        is_call = lambda toks: tokenizer.decode(toks, skip_special_tokens=False).rstrip().endswith(self.call[1])  # noqa: E731
        context = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        resp, sampled = [[] for _ in range(N)], [[] for _ in range(N)]
        calls, turns, obs_tokens, ended = [0] * N, [0] * N, [0] * N, [False] * N
        active = list(range(N))
        was_training = model.training
        model.eval()
        while active:
            budget = max(gen.max_new_tokens - len(resp[i]) for i in active)
            new = self._generate(model, tokenizer, active, context, resp, repeat, budget, gen, close, is_call,
                                 device).tolist()
            still = []
            for row, i in enumerate(active):
                toks, ended[i] = _turn(new[row], eos, pad, is_call)
                toks = toks[:gen.max_new_tokens - len(resp[i])]
                resp[i] += toks
                sampled[i] += [1] * len(toks)
                turns[i] += 1
                if ended[i] or not is_call(toks) or len(resp[i]) >= gen.max_new_tokens:
                    continue   # finished, or the budget is spent
                calls[i] += 1
                if calls[i] > self.max_turns:
                    continue   # no result past max_turns: the sequence ends here
                text = tokenizer.decode(toks, skip_special_tokens=False)
                obs = tokenizer(self.run_tool(text), add_special_tokens=False)["input_ids"]
                obs = obs[:gen.max_new_tokens - len(resp[i])]
                resp[i] += obs
                sampled[i] += [0] * len(obs)
                obs_tokens[i] += len(obs)
                if len(resp[i]) < gen.max_new_tokens:
                    still.append(i)
            active = still
        model.train(was_training)
        T = max(1, max(len(r) for r in resp))
        ids_NT = torch.tensor([r + [pad] * (T - len(r)) for r in resp], device=device)
        mask_NT = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in resp], device=device)
        loss_NT = torch.tensor([s + [0] * (T - len(s)) for s in sampled], device=device)
        prompt_ids, prompt_mask = _left_pad(context, pad, device)
        stats = dict(zip(TOOL_STATS, map(torch.tensor, (calls, turns, obs_tokens))))
        return Rollout(prompt_ids, prompt_mask, ids_NT, mask_NT, decode(tokenizer, ids_NT, mask_NT),
                       torch.tensor([not e for e in ended], device=device), loss_NT, stats)


def make_generator(recipe, task=None):
    """The recipe's generator: plain batched sampling, or tool rollouts with `generation.tools`,
    through `generation.engine`."""
    engine = recipe.generation.engine
    if recipe.generation.tools:
        return ToolRollouts(recipe.generation.tools, task, engine)
    return fast_generate if engine == "fast" else generate
