"""Checks that need the registries but no model: component names, their parameters, the data
source and cross-field rules. Called by `load_recipe` and so by every CLI command."""
from __future__ import annotations

from pathlib import Path

from .algorithms import ADVANTAGE_INPUTS, LOSS_INPUTS, REGULARIZER_INPUTS
from .errors import UserError, did_you_mean
from .llm import check_section
from .registry import check_params, construct, get, names, signature_params
from .rewards.combine import LOOP_ARGS
from .rewards.reward_model import RUN_RM, check_template
from .tasks.loaders import check_source, synthetic_rows
from .trainer import Components
from .transforms import TRANSFORM_INPUTS
from .vision import require_vision


def check_components(recipe) -> None:
    alg = recipe.algorithm
    task_cls = get("task", recipe.data.task, "data.task")
    check_params("task", recipe.data.task, recipe.data.params, "data.params")
    _check_synthetic(recipe, construct(task_cls, "data.params", **recipe.data.params))  # its range checks
    for i, reward in enumerate(recipe.rewards):
        check_params("reward", reward.fn, reward.params, f"rewards[{i}]", provided=(*LOOP_ARGS, "run_dir"),
                     require=False)
        if "llm" in reward.params:   # an llm client section (llm_judge, a user's judge reward)
            check_section(reward.params["llm"], f"rewards[{i}].llm")
    check_params("advantage", alg.advantage.fn, alg.advantage.params, "algorithm.advantage",
                 provided=ADVANTAGE_INPUTS)
    check_params("loss", alg.loss.fn, alg.loss.params, "algorithm.loss", provided=LOSS_INPUTS)
    if alg.loss.aggregation not in names("aggregation"):
        raise UserError("algorithm.loss.aggregation", f"unknown aggregation {alg.loss.aggregation!r}",
                        did_you_mean(alg.loss.aggregation, names("aggregation")))
    for i, reg in enumerate(alg.regularizers):
        check_params("regularizer", reg.fn, reg.params, f"algorithm.regularizers[{i}]",
                     provided=REGULARIZER_INPUTS)
    check_params("sampler", alg.sampler.fn, alg.sampler.params, "algorithm.sampler",
                 provided=("num_rows", "seed", "advantage"))
    sampler_cls = get("sampler", alg.sampler.fn)
    if "advantage" in signature_params(sampler_cls).parameters:
        if not hasattr(get("advantage", alg.advantage.fn), "p_hat"):
            raise UserError("algorithm.sampler.fn", f"sampler {alg.sampler.fn!r} reads the per-prompt values "
                            f"of a tracking advantage estimator, and {alg.advantage.fn!r} keeps none",
                            "use advantage spo")
    # Build the stateful components (classes: samplers, trackers, R2VPO...) as train will, so
    # their constructors' range checks fail here, before any model loads; one row stands in
    # for the data, which no constructor checks against.
    Components(recipe, num_rows=1)
    tools = recipe.generation.tools
    if tools is not None:
        check_params("tool", tools.tool.fn, tools.tool.params, "generation.tools.tool", provided=("task",))
        if recipe.generation.min_new_tokens:
            raise UserError("generation.min_new_tokens", "tool rollouts stop at every call; min_new_tokens must be 0")
    for i, stage in enumerate(recipe.stages):
        if stage.transform is not None:
            if stage.kind != "sft":
                raise UserError(f"stages[{i}].transform", "only sft stages take a transform")
            check_params("transform", stage.transform.fn, stage.transform.params,
                         f"stages[{i}].transform", provided=TRANSFORM_INPUTS)
        _check_rm_stage(recipe, i, stage)
        _check_practice_stage(recipe, i, stage)
    _check_rm_rewards(recipe)
    _check_rules(recipe)
    _check_reward_names(recipe)


def _stage_section(stage, i: int, kind: str, article: str, example: str):
    """The section a stage of `kind` carries under the same name (rm, practice): None for a stage
    of another kind, which must not carry one; required for a stage of this kind."""
    where, section = f"stages[{i}].{kind}", getattr(stage, kind)
    if stage.kind != kind:
        if section is not None:
            raise UserError(where, f"only {kind} stages take {article} {kind} section (this one is {stage.kind})")
        return None
    if section is None:
        raise UserError(where, f"{article} {kind} stage needs {article} {kind} section", f"e.g. {example}")
    return section


def _check_rm_stage(recipe, i: int, stage) -> None:
    """An rm stage says what it trains; a reward on `model: rm` needs one."""
    where = f"stages[{i}]"
    cfg = _stage_section(stage, i, "rm", "an", "rm: {data: {fn: polar_finetune}, loss: bradley_terry}")
    if cfg is None:
        return
    if stage.steps is None:
        raise UserError(f"{where}.steps", "an rm stage needs steps (0 keeps the untrained model: a control)")
    if stage.adapter != "none":
        raise UserError(f"{where}.adapter", "reward models are trained in full here", "set adapter: none")
    check_params("rm_data", cfg.data.fn, cfg.data.params, f"{where}.rm.data", provided=("rows", "rng", "task"))
    if cfg.loss == "bradley_terry" and len(cfg.labels) != 1:
        raise UserError(f"{where}.rm.labels", f"bradley_terry trains one score; got {len(cfg.labels)} labels",
                        "use loss: regression for several heads")
    if len(set(cfg.labels)) != len(cfg.labels):
        raise UserError(f"{where}.rm.labels", f"{cfg.labels} repeats a label")
    earlier = [s.rm for s in recipe.stages[:i] if s.kind == "rm"]
    if cfg.init == "rm" and not earlier:
        raise UserError(f"{where}.rm.init", "init: rm continues an earlier rm stage; there is none before this one")
    if cfg.init == "rm" and len(earlier[-1].labels) != len(cfg.labels):
        raise UserError(f"{where}.rm.labels", f"{len(cfg.labels)} labels, but the rm stage it continues has "
                        f"{len(earlier[-1].labels)}", "a continued reward model keeps its heads")
    check_template(cfg.template, f"{where}.rm.template")
    if cfg.init == "sft" and not any(s.kind == "sft" for s in recipe.stages[:i]):
        raise UserError(f"{where}.rm.init", "init: sft needs an sft stage before this one")


def _check_practice_stage(recipe, i: int, stage) -> None:
    """A practice stage (Training-Free GRPO) has a practice section with valid llm sections, and
    runs instead of RL: no steps, no rl stage beside it."""
    where = f"stages[{i}]"
    cfg = _stage_section(stage, i, "practice", "a", "practice: {llm: {fn: openai_compatible, base_url: ..., model: ...}}")
    if cfg is None:
        return
    if stage.steps is not None:
        raise UserError(f"{where}.steps", "a practice stage runs practice.epochs over the data; it takes no steps")
    if any(s.kind == "rl" for s in recipe.stages):
        raise UserError(f"{where}.kind", "a practice stage learns a library instead of weights; "
                        "it cannot share a recipe with an rl stage")
    check_section(cfg.llm, f"{where}.practice.llm")
    for role, section in cfg.roles.items():
        check_section(section, f"{where}.practice.roles.{role}")
    try:
        cfg.render.line.format(id="G0", text="x")
    except (KeyError, IndexError, ValueError) as exc:
        raise UserError(f"{where}.practice.render.line", f"{cfg.render.line!r} does not format: {exc}",
                        "it may name {id} and {text}") from None


def _check_rm_rewards(recipe) -> None:
    """reward_model entries on this run's RM (`model: rm`): the last rm stage gives the heads and
    the template they are checked against, before any model is trained."""
    stages = [s.rm for s in recipe.stages if s.kind == "rm"]
    for i, reward in enumerate(recipe.rewards):
        if reward.fn != "reward_model":
            continue
        params, where = reward.params, f"rewards[{i}]"
        if params.get("template") is not None:
            check_template(params["template"], f"{where}.template")
        if params.get("model") != RUN_RM:
            continue
        if not stages:
            raise UserError(f"{where}.model", "model: rm reads the reward model this run's rm stage "
                            "trains, and the recipe has no rm stage", "add one, or give a hub id or path")
        head, labels = params.get("head", 0), stages[-1].labels
        if isinstance(head, str) and head not in labels:
            raise UserError(f"{where}.head", f"the rm stage trains no head {head!r}", did_you_mean(head, labels))
        if isinstance(head, int) and not 0 <= head < len(labels):
            raise UserError(f"{where}.head", f"head {head} out of range: the rm stage trains {len(labels)}")
        template = params.get("template") or stages[-1].template
        if params.get("reference_column") and "{reference}" not in template:
            raise UserError(f"{where}.reference_column", f"the template {template!r} has no {{reference}}")


def _check_synthetic(recipe, task) -> None:
    """A synthetic source needs a task that makes data, with room for data.test_size test items
    (the task's split checks run on one test row, as cheap as it gets)."""
    if recipe.data.source != "synthetic":
        return
    from .tasks.base import Task
    if type(task).synthetic is Task.synthetic:  # not overridden
        raise UserError("data.source", f"task {recipe.data.task!r} has no synthetic data",
                        "give data.source: {hf: ...} or {path: ...}")
    synthetic_rows(task, "test", 1, recipe.train.seed, recipe.data.test_size)


def _check_rules(recipe) -> None:
    model, train, ev, gen = recipe.model, recipe.train, recipe.eval, recipe.generation
    if model.name_or_path != "tiny" and model.name_or_path.startswith((".", "/", "~")):
        if not Path(model.name_or_path).expanduser().exists():
            raise UserError("model.name_or_path", f"local model directory not found: {model.name_or_path}")
    check_source(recipe.data.source)
    if get("task", recipe.data.task).images:
        require_vision(recipe, f"task {recipe.data.task!r} shows images; the model is text-only")
        if train.prefix_sharing:
            raise UserError("train.prefix_sharing", "the shared-prefix forward is text-only; "
                            f"task {recipe.data.task!r} shows images", "set train.prefix_sharing: false")
    seen: dict[str, int] = {}
    for i, reward in enumerate(recipe.rewards):
        name = reward.label
        if name in seen:
            raise UserError(f"rewards[{i}]", f"two rewards log as reward/{name} (also rewards[{seen[name]}])",
                            "give one of them a name: field")
        seen[name] = i
    metric = recipe.algorithm.sampler.params.get("metric")
    if metric is not None and metric not in seen:
        raise UserError("algorithm.sampler.metric", f"{metric!r} is not one of the recipe's rewards",
                        did_you_mean(str(metric), list(seen)))
    for k in ev.k:
        if not 1 <= k <= ev.samples:
            raise UserError("eval.k", f"k={k} must be between 1 and eval.samples={ev.samples}")
    if len(set(ev.k)) != len(ev.k):
        raise UserError("eval.k", f"{ev.k} repeats a value", "list each k once")
    _check_eval_metrics(recipe)
    if gen.min_new_tokens > gen.max_new_tokens:
        raise UserError("generation.min_new_tokens", f"{gen.min_new_tokens} exceeds max_new_tokens {gen.max_new_tokens}")
    n = train.prompts_per_step * train.group_size
    if n % train.mini_batches:
        raise UserError("train.mini_batches", f"{train.mini_batches} does not divide the "
                        f"{n} completions of a step (prompts_per_step x group_size)")
    if recipe.algorithm.advantage.fn in ("grpo", "dr_grpo") and train.group_size < 2:
        raise UserError("train.group_size", "group-relative advantages need group_size >= 2")
    _check_whole_groups(recipe)
    for i, stage in enumerate(recipe.stages):
        if stage.kind == "sft" and not stage.steps:
            raise UserError(f"stages[{i}].steps", "an sft stage needs steps > 0")


# Component parameters whose value names one of the recipe's rewards (its `reward/<name>` label).
REWARD_NAME_PARAMS = ("action_reward", "metric")


def _check_reward_names(recipe) -> None:
    """A parameter that picks a reward by name (hrpo's action_reward, a sampler's metric) must
    name one of the recipe's rewards, or the first step fails deep in the loop."""
    labels = [r.label for r in recipe.rewards]
    alg = recipe.algorithm
    for field, comp in (("algorithm.advantage", alg.advantage), ("algorithm.sampler", alg.sampler)):
        for key in REWARD_NAME_PARAMS:
            value = comp.params.get(key)
            if isinstance(value, str) and value not in labels:
                raise UserError(f"{field}.{key}", f"{value!r} is not one of the recipe's rewards",
                                f"rewards: {', '.join(labels)}")


def _check_whole_groups(recipe) -> None:
    """Losses that compare a prompt's completions (they take `group_size`) need every mini- and
    micro-batch to hold whole groups."""
    train, alg = recipe.train, recipe.algorithm
    grouped = [f"loss {alg.loss.fn!r}"] if "group_size" in signature_params(get("loss", alg.loss.fn)).parameters else []
    grouped += [f"regularizer {r.fn!r}" for r in alg.regularizers
                if "group_size" in signature_params(get("regularizer", r.fn)).parameters]
    if not grouped:
        return
    G, N = train.group_size, train.prompts_per_step * train.group_size
    if (N // train.mini_batches) % G:
        raise UserError("train.mini_batches", f"{grouped[0]} needs whole groups: "
                        f"{N} // {train.mini_batches} is not a multiple of group_size {G}")
    if train.micro_batch_size and train.micro_batch_size % G:
        raise UserError("train.micro_batch_size", f"{grouped[0]} needs whole groups: "
                        f"use a multiple of group_size {G}")


def _check_eval_metrics(recipe) -> None:
    """`checkpoint.best_metric` (as logged: eval/NAME) and `expect.tiny.metric` (NAME, read by
    benchmarks/tiny_sweep.py) must be metrics that eval reports with these settings and task."""
    from .evaluate import reported
    from .rollout.multiturn import TOOL_STATS
    ck, ev = recipe.checkpoint, recipe.eval
    tools = TOOL_STATS if recipe.generation.tools else ()
    task = construct(get("task", recipe.data.task), "data.params", **recipe.data.params)  # metrics may follow params
    names = reported(ev.k, ev.samples, task.regression, tools, task.metrics)
    sampler = get("sampler", recipe.algorithm.sampler.fn)   # a sampler's own eval values (anytime accuracy)
    if hasattr(sampler, "eval_names"):
        names += sampler.eval_names(**recipe.algorithm.sampler.params)
    if ck.best_metric is not None:
        if not (ev.every and ev.every < recipe.train.steps) and not ev.at_end:
            raise UserError("checkpoint.best_metric", "no eval runs during or at the end of training",
                            "set eval.every or eval.at_end: true")
        _one_of_metrics("checkpoint.best_metric", ck.best_metric, [f"eval/{n}" for n in names])
    if "metric" in recipe.expect.tiny:
        _one_of_metrics("expect.tiny.metric", recipe.expect.tiny["metric"], names)


def _one_of_metrics(field: str, metric: str, names: list[str]) -> None:
    if metric not in names:
        raise UserError(field, f"{metric!r} is not a metric eval reports", did_you_mean(metric, names))
