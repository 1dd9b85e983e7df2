"""Running the `practice` stage (Training-Free GRPO, arXiv 2510.08191): the LLM roles, one
batch step, eval with a library, and the resumable loop. The library, templates and parsing are
in practice.py; see its docstring for the algorithm and the files a run writes."""
from __future__ import annotations

import json
from pathlib import Path

from .errors import UserError
from .practice import (ADVANTAGE, BATCH_UPDATE, GROUP_UPDATE, SUMMARY, ExperienceLibrary, _nan_to_zero, keep_group,
                       parse_lessons, parse_operations, read_state, render_prompt, schedule, write_atomically)
ROLES = ("policy", "summary", "advantage", "update")


class Clients:
    """One llm client per role (`roles.<role>`, else `llm`), with call counts. A local_hf
    section's `model: base` is the recipe's model, `model: sft` this run's SFT model."""

    def __init__(self, cfg, recipe, run_dir: Path, field: str):
        from .llm import client
        self.clients = {}
        for role in ROLES:
            section, where = (cfg.roles[role], f"{field}.roles.{role}") if role in cfg.roles else (cfg.llm, f"{field}.llm")
            params = dict(section.params)
            if section.fn == "local_hf" and params.get("model") in ("base", "sft"):
                params["model"] = self._model_path(params["model"], recipe, run_dir, where)
            self.clients[role] = client({"fn": section.fn, **params}, where)
        self.calls = dict.fromkeys(ROLES, 0)

    @staticmethod
    def _model_path(which: str, recipe, run_dir: Path, where: str) -> str:
        from .model import resolve_path
        if which == "base":
            return resolve_path(recipe.model)
        path = Path(run_dir) / "sft-model"
        if not (path / "config.json").exists():
            raise UserError(f"{where}.model", f"model: sft but {path} holds no SFT model",
                            "put an sft stage before the practice stage")
        return str(path)

    def ask(self, role: str, prompts: list, count: bool = True, **overrides) -> list[str]:
        if not prompts:
            return []
        if count:
            self.calls[role] += len(prompts)
        return self.clients[role].complete(prompts, **overrides)

    def ask_json(self, role: str, prompts: list, retries: int) -> tuple[list[list[dict]], int]:
        """(operations per prompt, replies that stayed unparseable): a reply that is not a JSON list
        of operations is asked again up to `retries` times, then taken as no operations."""
        out: list = [None] * len(prompts)
        todo, failures = list(range(len(prompts))), 0
        for _ in range(retries + 1):
            for i, reply in zip(todo, self.ask(role, [prompts[i] for i in todo])):
                out[i] = parse_operations(reply)
            todo = [i for i in todo if out[i] is None]
            if not todo:
                break
        failures = len(todo)
        return [ops or [] for ops in out], failures


def practice_step(clients: Clients, cfg, library: ExperienceLibrary, rows: list[dict], task, reward_fns,
                  step: int, seed: int) -> tuple[ExperienceLibrary, dict]:
    """One batch of §2 steps 1-7: rollouts, rewards, group filter, summaries, group advantages,
    group updates, one batch update. Returns E' and the step's metrics."""
    from .rewards.combine import combine, score
    G, questions = cfg.group_size, [task.prompt(r) for r in rows]
    prompts = [render_prompt(library, q, cfg.render) for q in questions for _ in range(G)]
    rollouts = clients.ask("policy", prompts, temperature=cfg.temperature, seed=seed)
    rewards_NK = score(reward_fns, prompts, rollouts, [r for r in rows for _ in range(G)], G, step)
    r_N = [_nan_to_zero(x) for x in combine(rewards_NK, [f.weight for f in reward_fns]).tolist()]
    groups = [r_N[b * G:(b + 1) * G] for b in range(len(rows))]
    kept = [b for b in range(len(rows)) if keep_group(groups[b], cfg.use_ground_truth)]
    answer = (lambda b: str(rows[b].get("answer", ""))) if cfg.use_ground_truth else (lambda b: "[REDACTED]")
    shown = library.render() or "(none)"
    summaries = clients.ask("summary", [SUMMARY.format(question=questions[b], answer=answer(b), experiences=shown,
                                                       rollout=rollouts[b * G + i]) for b in kept for i in range(G)])
    attempts = ["\n\n".join(f"Attempt {i + 1} (reward {groups[b][i]:g}):\n{summaries[k * G + i]}" for i in range(G))
                for k, b in enumerate(kept)]
    replies = clients.ask("advantage", [ADVANTAGE.format(question=questions[b], answer=answer(b), attempts=attempts[k],
                                                         num_experiences=cfg.num_experiences)
                                        for k, b in enumerate(kept)])
    lessons = [parse_lessons(r, cfg.num_experiences) for r in replies]
    shown = library.render() or "(empty)"
    group_ops, failed = clients.ask_json("update", [GROUP_UPDATE.format(library=shown, lessons="\n".join(
        f"- {x}" for x in ls) or "(none)") for ls in lessons], cfg.json_retries)
    plan: list[dict] = []
    if kept:
        proposed = json.dumps([op for ops in group_ops for op in ops], ensure_ascii=False)
        (plan,), failed_batch = clients.ask_json("update", [BATCH_UPDATE.format(library=shown, operations=proposed)],
                                                 cfg.json_retries)
        failed += failed_batch
    new, counts = library.apply(plan)
    metrics = {"reward_mean": sum(r_N) / len(r_N), "practice/kept_frac": len(kept) / len(rows),
               "practice/library_size": len(new), "practice/json_failures": failed,
               **{f"practice/ops_{k.lower()}": v for k, v in counts.items()},
               **{f"practice/calls_{k}": v for k, v in clients.calls.items()}}
    return new, metrics


def evaluate_library(clients: Clients, cfg, library: ExperienceLibrary, task, rows, samples: int, ks,
                     temperature: float, seed: int) -> dict:
    """pass@k / maj@k / mean@n of the policy client with `library` shown (evaluate.py's metrics)."""
    from .evaluate import per_problem, summarize
    prompts = [render_prompt(library, task.prompt(r), cfg.render) for r in rows for _ in range(samples)]
    texts = clients.ask("policy", prompts, count=False, temperature=temperature, seed=seed)
    chunks = [texts[i * samples:(i + 1) * samples] for i in range(len(rows))]
    correct = [[task.score(t, r) for t in ts] for ts, r in zip(chunks, rows)]
    answers = [[task.extract(t) for t in ts] for ts in chunks]
    return summarize(per_problem(correct, answers, rows, list(ks), task.check))


def library_file(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "experiences" / f"step-{step:04d}.json"


def run_practice(ctx, stage, index: int, resuming: bool = False) -> dict:
    """Run the practice stage on ctx's rows; resumes after the last finished batch when
    `resuming`. Returns {"start": eval with E0, "end": eval with the final E} (those run)."""
    recipe, cfg, run_dir = ctx.recipe, stage.practice, Path(ctx.run_dir)
    field, seed, ev = f"stages[{index}].practice", recipe.train.seed, recipe.eval
    clients = Clients(cfg, recipe, run_dir, field)
    train_rows = ctx.train_rows[:cfg.rows] if cfg.rows else ctx.train_rows
    batches = schedule(len(train_rows), cfg.epochs, cfg.batch_size, seed)
    state = read_state(run_dir) if resuming else None
    done = state["step"] if state else 0
    library = ExperienceLibrary.load(library_file(run_dir, done)) if done else ExperienceLibrary()
    if state:
        clients.calls.update(state["calls"])
    metrics_path = run_dir / "metrics.jsonl"
    _keep_rows_upto(metrics_path, done if done else -1)   # a fresh start keeps no rows
    eval_rows = ctx.test_rows[:ev.limit] if ev.limit else ctx.test_rows
    temperature = ev.temperature if ev.temperature is not None else cfg.temperature
    out = {}

    def evaluate(step: int, name: str) -> None:
        values = evaluate_library(clients, cfg, library, ctx.task, eval_rows, ev.samples, ev.k, temperature,
                                  seed * 1_000_003 + 999_983)   # the same draws for E0 and E_final
        out[name] = values
        _append(metrics_path, {"step": step, **{f"eval/{k}": v for k, v in values.items()}})
        ctx.say(f"practice eval ({name}, |E| = {len(library)}): pass@1 {values.get('pass@1', float('nan')):.3f}")

    if not done and ev.at_start:
        evaluate(0, "start")
    for step in range(done + 1, len(batches) + 1):
        rows = [train_rows[i] for i in batches[step - 1]]
        library, metrics = practice_step(clients, cfg, library, rows, ctx.task, ctx.reward_fns, step,
                                         seed * 1_000_003 + step)
        library.save(library_file(run_dir, step))
        _append(metrics_path, {"step": step, **metrics})
        write_atomically(run_dir / "practice_state.json", json.dumps({"step": step, "calls": clients.calls}))
        ctx.say(f"practice step {step}/{len(batches)}: reward {metrics['reward_mean']:.3f}, kept "
                f"{metrics['practice/kept_frac']:.2f}, |E| {len(library)}")
    library.save(run_dir / "experiences" / "final.json")
    if ev.at_end:
        evaluate(len(batches), "end")
    return out


def _append(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def _keep_rows_upto(path: Path, step: int) -> None:
    """Drop metric rows past the resume point (a batch that ran but did not finish saving)."""
    if not path.exists():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in rows if json.loads(line).get("step", 0) <= step]
    if len(kept) != len(rows):
        write_atomically(path, "".join(line + "\n" for line in kept))
