"""LLM clients (rlrecipes/llm.py: mock, openai_compatible against a local server; llm_local.py: local_hf on the
tiny model) and the llm_judge reward (issue 19 mechanism 5)."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from rlrecipes import llm as llm_mod
from rlrecipes import llm_local
from rlrecipes.config import load_recipe
from rlrecipes.errors import UserError
from rlrecipes.llm import Mock, as_text, check_section, client
from rlrecipes.rewards import llm_judge as judge_mod
from rlrecipes.rewards.combine import RewardFn
from rlrecipes.config import Reward


# ----------------------------------------------------------------------------- a local server
class Handler(BaseHTTPRequestHandler):
    """Answers POST /v1/chat/completions from the server's `script` (one entry per request,
    the last repeated): an int status, 'slow' (sleeps past the client's timeout) or 200 with
    `reply` (a function of the last user message)."""

    def do_POST(self):
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with server.lock:
            server.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            step = server.script.pop(0) if len(server.script) > 1 else server.script[0]
        if step == "slow":
            time.sleep(1.0)
            step = 200
        if step != 200:
            self.send_response(step)
            self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(b'{"error": "busy"}')
            return
        content = server.reply(body["messages"][-1]["content"])
        out = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):   # quiet
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.script, srv.seen, srv.lock = [200], [], threading.Lock()
    srv.reply = lambda text: f"echo: {text}"
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def fresh_clients(monkeypatch):
    monkeypatch.setattr(llm_mod, "_CLIENTS", {})
    monkeypatch.setenv("TEST_LLM_KEY", "sk-test")


def api(server, **params):
    return {"fn": "openai_compatible", "base_url": server.url, "model": "m", "api_key_env": "TEST_LLM_KEY",
            "backoff_s": 0.01, **params}


# ----------------------------------------------------------------------------------- mock
def test_mock_rules_default_echo_and_calls():
    m = client({"fn": "mock", "rules": [{"pattern": r"(\d+)\+(\d+)", "reply": r"sum \1 \2"},
                                        {"pattern": "hello", "reply": "hi"}]})
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "7+8?"}]
    assert m.complete(["say hello", "2+3", chat, "other"]) == ["hi", "sum 2 3", "sum 7 8", "other"]
    assert m.calls == ["say hello", "2+3", "be brief\n\n7+8?", "other"]   # a chat's text: contents joined
    assert Mock(default="NONE").complete(["x"]) == ["NONE"]
    assert Mock(reply_fn="tests.test_llm:shout").complete(["ab"]) == ["AB"]


def shout(text):
    return text.upper()


def test_mock_bad_rule_is_a_one_line_error():
    with pytest.raises(UserError, match=r"judge\.rules\[0\]\.pattern: not a regular expression"):
        client({"fn": "mock", "rules": [{"pattern": "(", "reply": "x"}]}, "judge")
    with pytest.raises(UserError, match=r"judge\.rules\[0\]: a rule is"):
        client({"fn": "mock", "rules": [{"regex": "a", "reply": "x"}]}, "judge")
    with pytest.raises(TypeError, match="overrides"):
        Mock().complete(["x"], top_k=3)


def test_sections_are_checked_and_clients_cached():
    with pytest.raises(UserError, match=r"stages\[0\]\.llm\.fn: unknown llm 'mok'.*did you mean mock"):
        check_section({"fn": "mok"}, "stages[0].llm")
    with pytest.raises(UserError, match=r"x\.llm\.temprature: unknown parameter of llm 'local_hf'"):
        check_section({"fn": "local_hf", "model": "tiny", "temprature": 0.5}, "x.llm")
    with pytest.raises(UserError, match=r"x\.llm\.model: required parameter"):
        check_section({"fn": "openai_compatible", "base_url": "http://h"}, "x.llm")
    with pytest.raises(UserError, match=r"x\.llm\.timeout_s: expected a number"):
        check_section({"fn": "openai_compatible", "base_url": "http://h", "model": "m", "timeout_s": "9"}, "x.llm")
    with pytest.raises(UserError, match=r"x\.llm: an llm section is \{fn: NAME"):
        client("mock", "x.llm")
    a = client({"fn": "mock", "default": "a"})
    assert client({"fn": "mock", "default": "a"}) is a and client({"fn": "mock", "default": "b"}) is not a
    assert client(a) is a
    assert as_text([{"role": "user", "content": "q"}]) == "q"


# ------------------------------------------------------------------------- openai_compatible
def test_openai_success_sends_model_messages_and_key(server):
    c = client(api(server, temperature=0.7, max_tokens=32))
    assert c.complete(["one", [{"role": "system", "content": "s"}, {"role": "user", "content": "two"}]]) == \
        ["echo: one", "echo: two"]
    assert len(server.seen) == 2
    first = sorted(server.seen, key=lambda s: s["body"]["messages"][-1]["content"])[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer sk-test"
    assert first["body"] == {"model": "m", "messages": [{"role": "user", "content": "one"}],
                             "temperature": 0.7, "max_tokens": 32}
    assert c.chat("x", temperature=0.0) == "echo: x"
    assert server.seen[-1]["body"]["temperature"] == 0.0   # an override for this call only


def test_openai_batch_keeps_order_under_concurrency(server):
    c = client(api(server, concurrency=4))
    prompts = [f"p{i}" for i in range(9)]
    assert c.complete(prompts) == [f"echo: {p}" for p in prompts]


def test_openai_retries_503_then_succeeds(server):
    server.script = [503, 429, 200]
    assert client(api(server, retries=3)).complete(["q"]) == ["echo: q"]
    assert len(server.seen) == 3


def test_openai_gives_up_with_url_and_status(server):
    server.script = [503]
    with pytest.raises(UserError) as err:
        client(api(server, retries=2), "rewards[0].llm").complete(["q"])
    msg = str(err.value)
    assert msg.startswith("rewards[0].llm: POST " + server.url + "/chat/completions failed after 3 attempts")
    assert "HTTP 503" in msg and "\n" not in msg
    assert len(server.seen) == 3


def test_openai_client_error_is_not_retried(server):
    server.script = [401]
    with pytest.raises(UserError, match=r"HTTP 401.*busy"):
        client(api(server, retries=3)).complete(["q"])
    assert len(server.seen) == 1


def test_openai_timeout_then_giving_up(server):
    server.script = ["slow"]
    t0 = time.monotonic()
    with pytest.raises(UserError, match=r"failed after 2 attempts: no response \(.*timed out"):
        client(api(server, retries=1, timeout_s=0.2)).complete(["q"])
    assert time.monotonic() - t0 < 1.5


def test_openai_connection_refused_is_retried_then_an_error():
    import socket
    with socket.socket() as s:   # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = client({"fn": "openai_compatible", "base_url": f"http://127.0.0.1:{port}/v1", "model": "m",
                "api_key_env": None, "retries": 1, "backoff_s": 0.01})
    with pytest.raises(UserError, match=r"failed after 2 attempts: no response \(ConnectionRefusedError"):
        c.complete(["q"])


def test_openai_missing_key_names_the_field(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(UserError, match=r"^judge\.api_key_env: environment variable OPENAI_API_KEY is not set"):
        client({"fn": "openai_compatible", "base_url": server.url, "model": "m"}, "judge")
    c = client({"fn": "openai_compatible", "base_url": server.url, "model": "m", "api_key_env": None})
    assert c.complete(["q"]) == ["echo: q"] and server.seen[0]["auth"] is None
    with pytest.raises(UserError, match=r"judge\.base_url: 'localhost:1' is not an http"):
        client({"fn": "openai_compatible", "base_url": "localhost:1", "model": "m", "api_key_env": None}, "judge")


# ---------------------------------------------------------------------------------- local_hf
@pytest.fixture
def on_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_local_hf_tiny_greedy_batched_and_rng_untouched(on_cpu):
    c = client({"fn": "local_hf", "model": "tiny", "max_new_tokens": 6, "batch_size": 2})
    prompts = ["12+30=", "<answer>", "hello there"]
    out = c.complete(prompts)
    assert len(out) == 3 and all(isinstance(o, str) for o in out)
    assert all(len(c.tokenizer(o, add_special_tokens=False)["input_ids"]) <= 6 for o in out)
    assert c.complete(prompts) == out                                  # greedy: deterministic
    assert [c.complete([p])[0] for p in prompts] == out                # batching (left padding) changes nothing
    assert llm_local._load_hf("tiny", c.device, c.dtype, False, "x")[0] is c.model   # loaded once
    state = torch.random.get_rng_state()
    sampled = client({"fn": "local_hf", "model": "tiny", "max_new_tokens": 6, "temperature": 1.0, "seed": 3})
    first = sampled.complete(prompts)
    assert torch.equal(torch.random.get_rng_state(), state)            # the policy's RNG is not consumed
    again = client({"fn": "local_hf", "model": "tiny", "max_new_tokens": 6, "temperature": 1.0, "seed": 3},
                   "other")                                            # a new client, same seed: same samples
    assert again.complete(prompts) == first
    assert sampled.complete(prompts, seed=7) == again.complete(prompts, seed=7)   # a seed override fixes a call
    assert sampled.complete(prompts, seed=7) != sampled.complete(prompts, seed=8)
    assert not c.use_template and c.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]) \
        == "a\n\nb"                                                    # no chat template: plain text


def test_local_hf_chat_template(on_cpu, tmp_path):
    from rlrecipes.tiny import tiny_path
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_path())
    with pytest.raises(UserError, match=r"x\.chat_template: the tokenizer of .* has no chat template"):
        client({"fn": "local_hf", "model": "tiny", "chat_template": "always"}, "x")
    import shutil
    shutil.copytree(tiny_path(), tmp_path / "m")
    tok.chat_template = "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}[assistant]"
    tok.save_pretrained(tmp_path / "m")
    c = client({"fn": "local_hf", "model": str(tmp_path / "m"), "max_new_tokens": 3})
    assert c.render("hi") == "[user]hi[assistant]"
    assert len(c.complete(["hi"])) == 1
    with pytest.raises(UserError, match=r"y\.model: cannot load"):
        client({"fn": "local_hf", "model": str(tmp_path / "missing")}, "y")
    with pytest.raises(UserError, match=r"y\.top_p: must be in \(0, 1\]"):
        client({"fn": "local_hf", "model": "tiny", "top_p": 0}, "y")


# --------------------------------------------------------------------------------- llm_judge
def test_parse_score_takes_the_last_match():
    assert judge_mod.parse_score("Score: 3 ... on reflection, Score: 8") == 8.0
    assert judge_mod.parse_score("**Score:** 7.5") == 7.5
    assert judge_mod.parse_score("score=-2") == -2.0
    assert judge_mod.parse_score("I cannot grade this") is None
    assert judge_mod.parse_score("verdict 4/5", r"verdict (\d)/5") == 4.0


def test_llm_judge_with_mock_fills_template_and_counts_unparsed(monkeypatch):
    monkeypatch.setattr(judge_mod, "STATS", {"asked": 0, "unparsed": 0})
    section = {"fn": "mock", "rules": [{"pattern": r"Reference answer:\n(\d+)\n\nResponse:\n\1\n", "reply": "Score: 10"},
                                       {"pattern": r"Response:\n\d+\n", "reply": "wrong. Score: 2"}],
               "default": "no idea"}
    out = judge_mod.llm_judge(["1+1?", "1+1?", "1+1?"], ["2", "3", "two"], llm=section, scale=0.1,
                              reference_column="answer", answer=["2", "2", "2"])
    assert out == [1.0, pytest.approx(0.2), None]
    assert judge_mod.STATS == {"asked": 3, "unparsed": 1}
    asked = client(section, "rewards.llm").calls
    assert len(asked) == 3 and "Question:\n1+1?" in asked[0] and "Reference answer:\n2" in asked[0]


def test_llm_judge_through_the_reward_loop_and_a_local_server(server):
    server.reply = lambda text: "Score: 9" if "Response:\nyes" in text else "Score: 1"
    spec = Reward(fn="llm_judge", llm=api(server), scale=0.1, system="You are strict.")
    fn = RewardFn(spec, 0)
    out = fn(["q1", "q2"], ["yes", "no"], {}, group_size=2, step=0)
    assert out == [pytest.approx(0.9), pytest.approx(0.1)]
    assert {s["body"]["messages"][0]["content"] for s in server.seen} == {"You are strict."}
    server.script = [503]
    bad = RewardFn(Reward(fn="llm_judge", llm=api(server, retries=0)), 3)
    with pytest.raises(UserError, match=r"^rewards\[3\]\.llm: POST .* failed after 1 attempts: HTTP 503"):
        bad(["q"], ["a"], {}, group_size=1, step=0)


def test_llm_judge_bad_inputs():
    mock = {"fn": "mock", "default": "Score: 1"}
    with pytest.raises(UserError, match=r"rewards\.pattern: .* has no group"):
        judge_mod.llm_judge(["p"], ["c"], llm=mock, pattern=r"Score: \d")
    with pytest.raises(UserError, match=r"rewards\.template: .* has no \{completion\}"):
        judge_mod.llm_judge(["p"], ["c"], llm=mock, template="rate {prompt}")
    with pytest.raises(UserError, match=r"rewards\.reference_column: no dataset column 'gold'"):
        judge_mod.llm_judge(["p"], ["c"], llm=mock, reference_column="gold")


def test_validate_checks_the_judge_section():
    rl = "rewards=[{fn: llm_judge, llm: {fn: openai_compatible, base_url: 'http://h', model: m, retrys: 2}}]"
    with pytest.raises(UserError, match=r"rewards\[0\]\.llm\.retrys: unknown parameter of llm 'openai_compatible'"):
        load_recipe("recipes/grpo.yaml", overrides=[rl])
    ok = "rewards=[{fn: llm_judge, llm: {fn: mock, default: 'Score: 5'}, scale: 0.1}]"
    assert load_recipe("recipes/grpo.yaml", overrides=[ok]).rewards[0].fn == "llm_judge"
