"""LLM clients: a language model that is not the policy (a judge, a summariser, an experience
writer), selected in a recipe like any component (registry kind `llm`, issue 19 mechanism 5).

    llm: {fn: openai_compatible, base_url: "https://api.deepseek.com/v1", model: deepseek-chat,
          api_key_env: DEEPSEEK_API_KEY, temperature: 0.7}
    llm: {fn: local_hf, model: Qwen/Qwen2.5-7B-Instruct, max_new_tokens: 512}   # or a path, or tiny
    llm: {fn: mock, rules: [{pattern: "Score the answer", reply: "Score: 7"}], default: "NONE"}

Contract (`LLM`): `complete(prompts, **overrides) -> list[str]`, one reply per prompt, in order.
A prompt is a string (one user message) or a chat, a list of `{role, content}` messages.
Overrides every client takes: `temperature` (0 = greedy), `max_tokens` (new tokens per reply) and
`seed` (local_hf: this call's sampling seed; openai_compatible: sent as the API's `seed`; mock: unused).
A component gets its client from its YAML section with `client(section, field)` (built once per
process per distinct section, parameters checked by the registry, a bad one a one-line UserError
naming `field.<param>`); `check_section` runs the same checks at `rlrecipes validate`.

- `local_hf` (`rlrecipes/llm_local.py`): any causal LM (hub id, local directory, or `tiny`),
  loaded once per process; the tokenizer's chat template when it has one (else the messages'
  contents joined by blank lines), batched left-padded `generate`; sampling is seeded and leaves
  the global RNG untouched.
- `openai_compatible`: POST `{base_url}/chat/completions` (urllib, no extra dependency), key from
  the environment variable `api_key_env` (null: no Authorization header, e.g. a local vLLM);
  429, 5xx, connection errors and timeouts are retried with exponential backoff (Retry-After
  honoured, capped at 60 s); other HTTP errors and the last failure are one-line UserErrors naming
  the URL and status. `concurrency` requests run at a time.
- `mock`: deterministic rules for tests and tiny presets: the first rule whose regex `pattern`
  is found in the prompt's text gives the reply (`\\1`-style groups expanded); else `reply_fn`
  ("package.module:function", called with the prompt text), else `default`, else the text itself
  (echo). Every prompt it saw is kept in `calls`.
"""
from __future__ import annotations

import importlib
import json
import random
import re
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .errors import UserError
from .registry import check_params, construct, get, register

OVERRIDES = ("temperature", "max_tokens", "seed")
_CLIENTS: dict[str, "LLM"] = {}


class LLM:
    """The common interface: `complete(prompts, **overrides) -> list[str]`."""

    where = "llm"

    def complete(self, prompts: list, **overrides) -> list[str]:
        raise NotImplementedError

    def chat(self, messages: list[dict] | str, **overrides) -> str:
        """One reply to one prompt (a string or a list of messages)."""
        return self.complete([messages], **overrides)[0]

    def _overrides(self, overrides: dict) -> dict:
        unknown = sorted(set(overrides) - set(OVERRIDES))
        if unknown:
            raise TypeError(f"{type(self).__name__}.complete takes overrides {OVERRIDES}, not {unknown}")
        return overrides


def as_messages(prompt) -> list[dict]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and all(isinstance(m, dict) and "content" in m for m in prompt):
        return [{"role": m.get("role", "user"), "content": str(m["content"])} for m in prompt]
    raise TypeError(f"a prompt is a string or a list of {{role, content}} messages, got {type(prompt).__name__}")


def as_text(prompt) -> str:
    """A prompt as plain text: a string as is, a chat's contents joined by blank lines."""
    return prompt if isinstance(prompt, str) else "\n\n".join(m["content"] for m in as_messages(prompt))


def _split(section, field: str) -> tuple[str, dict]:
    if hasattr(section, "fn") and hasattr(section, "params"):   # a schema Component
        return section.fn, dict(section.params)
    if not isinstance(section, dict) or not isinstance(section.get("fn"), str):
        raise UserError(field, f"an llm section is {{fn: NAME, ...parameters}}, got {section!r}",
                        "e.g. {fn: openai_compatible, base_url: ..., model: ...}")
    return section["fn"], {k: v for k, v in section.items() if k != "fn"}


def check_section(section, field: str) -> None:
    """Validate-time check of an llm section: a known client and its parameters."""
    fn, params = _split(section, field)
    check_params("llm", fn, params, field, provided=("where",))


def client(section, field: str = "llm") -> LLM:
    """The client of an llm section (a dict `{fn, **params}` or a Component), built once per
    process per distinct section; an LLM instance is returned as is."""
    if isinstance(section, LLM):
        return section
    fn, params = _split(section, field)
    key = json.dumps([fn, params, field], sort_keys=True, default=str)
    if key not in _CLIENTS:
        check_section(section, field)
        _CLIENTS[key] = construct(get("llm", fn, f"{field}.fn"), field, where=field, **params)
    return _CLIENTS[key]


# ---------------------------------------------------------------------------------------- mock
@register("llm", "mock")
class Mock(LLM):
    """Rules, tried in order: `{pattern: REGEX, reply: TEXT}`; the first whose pattern is found
    (re.search, DOTALL) in the prompt's text answers with `match.expand(reply)`. Unmatched:
    `reply_fn(text)` if given, else `default`, else the text itself."""

    def __init__(self, rules: list[dict] | None = None, default: str | None = None, reply_fn: str | None = None,
                 where: str = "llm"):
        self.where, self.default, self.calls = where, default, []
        self.rules = []
        for i, rule in enumerate(rules or []):
            if not isinstance(rule, dict) or set(rule) != {"pattern", "reply"}:
                raise UserError(f"{where}.rules[{i}]", f"a rule is {{pattern: REGEX, reply: TEXT}}, got {rule!r}")
            try:
                self.rules.append((re.compile(rule["pattern"], re.DOTALL), str(rule["reply"])))
            except re.error as exc:
                raise UserError(f"{where}.rules[{i}].pattern", f"not a regular expression: {exc}") from None
        self.reply_fn = _import_fn(reply_fn, f"{where}.reply_fn") if reply_fn else None

    def complete(self, prompts: list, **overrides) -> list[str]:
        self._overrides(overrides)
        return [self._one(as_text(p)) for p in prompts]

    def _one(self, text: str) -> str:
        self.calls.append(text)
        for regex, reply in self.rules:
            m = regex.search(text)
            if m:
                return m.expand(reply)
        if self.reply_fn is not None:
            return str(self.reply_fn(text))
        return self.default if self.default is not None else text


def _import_fn(spec: str, field: str):
    module_name, _, attr = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr, None)
    except ImportError as exc:
        raise UserError(field, f"cannot import module {module_name!r}: {exc}") from None
    if not callable(fn):
        raise UserError(field, f"{module_name!r} has no function {attr!r}", "write package.module:function")
    return fn


# ---------------------------------------------------------------------------- openai_compatible
RETRY_STATUS = (408, 409, 429, 500, 502, 503, 504)


@register("llm", "openai_compatible")
class OpenAICompatible(LLM):
    """An OpenAI-style chat-completions endpoint (OpenAI, DeepSeek, vLLM, SGLang, ...)."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None = "OPENAI_API_KEY",
                 temperature: float = 0.0, max_tokens: int = 1024, top_p: float | None = None,
                 timeout_s: float = 120.0, retries: int = 4, backoff_s: float = 1.0, concurrency: int = 4,
                 extra_body: dict[str, Any] | None = None, where: str = "llm"):
        import os
        if not base_url.startswith(("http://", "https://")):
            raise UserError(f"{where}.base_url", f"{base_url!r} is not an http(s) URL")
        for name, value in (("timeout_s", timeout_s), ("max_tokens", max_tokens), ("concurrency", concurrency)):
            if value <= 0:
                raise UserError(f"{where}.{name}", f"must be > 0, got {value!r}")
        if retries < 0 or backoff_s < 0:
            raise UserError(f"{where}.{'retries' if retries < 0 else 'backoff_s'}", "must be >= 0")
        self.key = None
        if api_key_env:
            self.key = os.environ.get(api_key_env)
            if not self.key:
                raise UserError(f"{where}.api_key_env", f"environment variable {api_key_env} is not set",
                                f"export {api_key_env}=..., or api_key_env: null for a server without keys")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.where, self.model, self.timeout_s = where, model, timeout_s
        self.retries, self.backoff_s, self.concurrency = retries, backoff_s, concurrency
        self.body = {"temperature": temperature, "max_tokens": max_tokens,
                     **({"top_p": top_p} if top_p is not None else {}), **(extra_body or {})}

    def complete(self, prompts: list, **overrides) -> list[str]:
        body = {**self.body, **{k: v for k, v in self._overrides(overrides).items() if v is not None}}
        if len(prompts) <= 1 or self.concurrency == 1:
            return [self._post(p, body) for p in prompts]
        with ThreadPoolExecutor(min(self.concurrency, len(prompts))) as pool:
            return list(pool.map(lambda p: self._post(p, body), prompts))

    def _post(self, prompt, body: dict) -> str:
        data = json.dumps({"model": self.model, "messages": as_messages(prompt), **body}).encode()
        headers = {"Content-Type": "application/json",
                   **({"Authorization": f"Bearer {self.key}"} if self.key else {})}
        failure = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self._wait(attempt, failure))
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return self._content(response.read())
            except urllib.error.HTTPError as exc:
                failure = f"HTTP {exc.code} {exc.reason}"
                self._retry_after = exc.headers.get("Retry-After") if exc.headers else None
                if exc.code not in RETRY_STATUS:
                    detail = exc.read()[:200].decode(errors="replace").replace("\n", " ")
                    raise UserError(self.where, f"POST {self.url}: {failure}: {detail}",
                                    "check base_url, model and the API key") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                reason = getattr(exc, "reason", exc)
                failure = f"no response ({type(reason).__name__}: {reason})"
                self._retry_after = None
        raise UserError(self.where, f"POST {self.url} failed after {self.retries + 1} attempts: {failure}",
                        f"is the server up? raise {self.where}.retries or timeout_s")

    def _wait(self, attempt: int, failure: str) -> float:
        after = getattr(self, "_retry_after", None)
        if after and after.replace(".", "", 1).isdigit():
            return min(float(after), 60.0)
        return min(self.backoff_s * 2 ** (attempt - 1) * (1 + 0.1 * random.random()), 60.0)

    def _content(self, raw: bytes) -> str:
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise UserError(self.where, f"POST {self.url}: not a chat-completions response: "
                            f"{raw[:120].decode(errors='replace')!r}") from None
        return content or ""
