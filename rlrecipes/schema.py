"""The recipe schema: pydantic v2 models with extra=forbid, one per YAML section.

`config.py` loads a YAML file, merges presets and overrides and validates it against `Recipe`.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AllowInfNan, BaseModel, ConfigDict, Field, field_validator, with_config
from pydantic import Strict as _NoCoercion
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

# Strict scalars: no bool -> int, no "1" -> int, no "0.5" -> float (the YAML loader already reads
# 1e-5 as a float); an int is a float; every float is finite.
Int = Annotated[int, _NoCoercion()]
Float = Annotated[float, _NoCoercion(), AllowInfNan(False)]
Bool = Annotated[bool, _NoCoercion()]
Unit = Annotated[Float, Field(ge=0, lt=1)]   # in [0, 1)
# numpy's seed range: accelerate's set_seed (train.seed) refuses anything else, and only at train time
Seed = Annotated[Int, Field(ge=0, lt=2**32)]
Tag = Annotated[str, Field(min_length=1)]   # an empty tag would match everywhere


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Component(BaseModel):
    """`{fn: name, **params}`: a registered component and its parameters (checked at validate)."""
    model_config = ConfigDict(extra="allow")
    fn: str

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Paper(Strict):
    title: str
    arxiv: str | None = None
    url: str | None = None


class Fidelity(Strict):
    status: Literal["working", "partial", "recon", "unverified", "out-of-scope", "not-yet"] = "working"
    notes: str = ""


class LoraConfig(Strict):
    r: Int = Field(16, gt=0)
    alpha: Float = Field(32, gt=0)
    dropout: Float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | str = "all-linear"


class TinyConfig(Strict):
    """Shape of the built-in offline model (`model.name_or_path: tiny`)."""
    hidden_size: Int = Field(64, gt=0)
    layers: Int = Field(2, gt=0)
    heads: Int = Field(4, gt=0)
    kv_heads: Int = Field(2, gt=0)
    intermediate_size: Int = Field(256, gt=0)
    vocab_size: Int | None = Field(None, gt=0)   # pad the embedding (e.g. 151936 for Qwen-shaped benchmarks)
    seed: Seed = 0


class VisionConfig(Strict):
    """A vision-language policy (Qwen2-VL family); prompts of rows with images show them."""
    train_tower: Bool = False       # frozen vision encoder by default: LoRA and gradients on the LM only
    min_pixels: Int | None = Field(None, gt=0)   # image processor resize bounds (memory on real models)
    max_pixels: Int | None = Field(None, gt=0)


class ModelConfig(Strict):
    name_or_path: str
    adapter: Literal["none", "lora", "qlora"] = "lora"
    lora: LoraConfig = LoraConfig()
    tiny: TinyConfig = TinyConfig()
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: Bool = False
    revision: str | None = None
    gradient_checkpointing: Bool = False
    chat_template: Bool = False   # wrap prompts in the tokenizer's chat template (instruct models)
    vision: VisionConfig | None = None   # set: load an image-text-to-text model and its image processor


class DataConfig(Strict):
    task: str
    source: Literal["synthetic"] | dict[str, Any] = "synthetic"
    fields: dict[str, str] = {}
    params: dict[str, Any] = {}
    train_size: Int | None = Field(None, gt=0)
    test_size: Int = Field(200, gt=0)


class RewardModelStage(Strict):
    """What an `rm` stage trains (rlrecipes/rm.py): a sequence classifier with one output per
    label, on examples a registered `rm_data` builder makes from the task's rows."""
    data: Component                 # rm_data builder: fn(rows, rng, task, **params) -> examples
    loss: Literal["bradley_terry", "regression"] = "bradley_terry"
    labels: list[Tag] = Field(["score"], min_length=1)   # one head each; bradley_terry: one
    init: str = "base"              # base (the recipe's model) | sft | rm (continue) | hub id | path
    template: str = "{prompt}{completion}"   # the RM's input; the reward reads it from the saved model
    tiny: TinyConfig | None = None  # init base on `tiny`: the RM's own shape and seed
    eval_size: Int = Field(256, gt=0)   # held-out examples (from test rows) scored at the end


class PracticeRender(Strict):
    """How the library is shown before a question (Training-Free GRPO's fmt(E), the authors' code)."""
    header: str = ("When solving problems, you MUST first carefully read and understand the helpful "
                   "instructions and experiences:\n")
    line: str = "[{id}]. {text}"
    sep: str = "\n\n"


class PracticeStage(Strict):
    """What a `practice` stage runs (rlrecipes/practice.py): Training-Free GRPO, arXiv 2510.08191."""
    llm: Component                  # every role's client unless `roles` names one
    roles: dict[Literal["policy", "summary", "advantage", "update"], Component] = {}
    rows: Int | None = Field(None, gt=0)   # use the first N training rows (the paper: 100 problems)
    epochs: Int = Field(3, gt=0)
    batch_size: Int = Field(100, gt=0)   # questions per library update
    group_size: Int = Field(5, gt=0)
    temperature: Float = Field(0.7, ge=0)   # rollouts
    num_experiences: Int = Field(1, gt=0)   # lessons per kept group
    use_ground_truth: Bool = True   # shows the answer to the LLM roles and filters to 0 < mean < 1
    json_retries: Int = Field(3, ge=0)
    render: PracticeRender = PracticeRender()


class Stage(Strict):
    kind: Literal["sft", "rm", "rl", "practice"]
    steps: Int | None = Field(None, ge=0)
    lr: Float | None = Field(None, gt=0)
    batch_size: Int = Field(32, gt=0)
    adapter: Literal["none", "lora"] = "none"
    transform: Component | None = None  # sft only: rewrites (question, gold) per example
    rm: RewardModelStage | None = None  # rm only: what the reward model learns
    practice: PracticeStage | None = None  # practice only: the experience-library loop


class Reward(Component):
    weight: Float = 1.0   # 0: logged as reward/<name> but not trained on (a metric)
    name: str | None = None  # display name in metrics (default: the function's name)
    timeout_s: Float = Field(60.0, gt=0)  # per call; a hung reward is an error naming it

    @property
    def label(self) -> str:
        """The name its metrics are logged under: `reward/<label>`."""
        return self.name or self.fn.rsplit(":", 1)[-1]


class LossSpec(Component):
    aggregation: str = "token_mean"


class KLConfig(Strict):
    beta: Float = Field(0.0, ge=0)
    estimator: Literal["k1", "k2", "k3"] = "k3"


class Algorithm(Strict):
    advantage: Component = Component(fn="grpo")
    loss: LossSpec = LossSpec(fn="ppo_clip")
    kl: KLConfig = KLConfig()
    sampler: Component = Component(fn="uniform")
    regularizers: list[Component] = []


class Train(Strict):
    steps: Int = Field(100, ge=0)
    prompts_per_step: Int = Field(16, gt=0)
    group_size: Int = Field(8, gt=0)
    lr: Float = Field(1e-6, gt=0)
    seed: Seed = 0
    ppo_epochs: Int = Field(1, gt=0)
    mini_batches: Int = Field(1, gt=0)
    micro_batch_size: Int | None = Field(None, gt=0)
    warmup_steps: Int = Field(0, ge=0)
    schedule: Literal["constant", "cosine"] = "constant"
    weight_decay: Float = Field(0.0, ge=0)
    betas: tuple[Unit, Unit] = (0.9, 0.999)   # Adam's, each in [0, 1)
    max_grad_norm: Float | None = Field(1.0, gt=0)
    max_skipped_steps: Int = Field(3, gt=0)   # stop after this many consecutive non-finite steps
    prefix_sharing: Bool = False   # Prefix Grouper (arXiv 2506.05433): a group's prompt computed once


class ToolUse(Strict):
    """Multi-turn rollouts: `tool` answers each call between the `call` tags, inside `result`."""
    tool: Component
    max_turns: Int = Field(4, gt=0)
    call: tuple[Tag, Tag] = ("<search>", "</search>")
    result: tuple[Tag, Tag] = ("<information>", "</information>")


class Generation(Strict):
    max_new_tokens: Int = Field(256, gt=0)   # with tools: the whole trajectory, observations included
    temperature: Float = Field(1.0, gt=0)
    top_p: Float = Field(1.0, gt=0, le=1)
    top_k: Int = Field(0, ge=0)
    min_new_tokens: Int = Field(0, ge=0)
    tools: ToolUse | None = None
    engine: Literal["hf", "fast"] = "fast"  # rlrecipes/rollout/engine.py (prompt prefilled once per group); hf: generate
    cuda_graphs: Bool = True                # fast engine on CUDA: decode steps replayed from a CUDA graph


class Eval(Strict):
    every: Int = Field(0, ge=0)
    samples: Int = Field(4, gt=0)
    k: list[Annotated[Int, Field(gt=0)]] = Field([1], min_length=1)
    temperature: Float | None = Field(None, gt=0)
    limit: Int | None = Field(None, gt=0)
    at_start: Bool = True
    at_end: Bool = True


class Checkpoint(Strict):
    every: Int = Field(0, ge=0)
    keep_last: Int = Field(2, gt=0)
    best_metric: str | None = None            # e.g. eval/pass@1: selects checkpoints/best
    best_mode: Literal["max", "min"] = "max"


@with_config(ConfigDict(extra="forbid"))
class PaperExpect(TypedDict, total=False):
    """What the paper reports (a dict, as scripts read it): `value` None where it gives none."""
    metric: str
    value: Float | str | None
    source: str


@with_config(ConfigDict(extra="forbid"))
class TinyExpect(TypedDict, total=False):
    """What the tiny preset must show: eval's `metric` (e.g. pass@1) rises by `min_gain`."""
    metric: str
    min_gain: Float


class Expect(Strict):
    paper: PaperExpect = {}
    tiny: TinyExpect = {}


class Logging(Strict):
    """Where metrics go besides metrics.jsonl: experiment trackers, through their own libraries
    (`pip install 'rlrecipes[tracking]'`), written locally: under the run directory, trackio in
    its own store (rlrecipes/tracking.py)."""
    report_to: list[Literal["tensorboard", "mlflow", "wandb", "trackio"]] = []


class Recipe(Strict):
    name: str
    paper: Paper
    summary: str = ""
    fidelity: Fidelity = Fidelity()
    sources: dict[str, str] = {}
    model: ModelConfig
    data: DataConfig
    stages: list[Stage] = Field([Stage(kind="rl")], min_length=1)
    rewards: list[Reward] = Field(min_length=1)
    algorithm: Algorithm = Algorithm()
    train: Train = Train()
    generation: Generation = Generation()
    eval: Eval = Eval()
    checkpoint: Checkpoint = Checkpoint()
    logging: Logging = Logging()
    expect: Expect = Expect()
    presets: dict[str, dict[str, Any]] = {}

    @field_validator("stages")
    @classmethod
    def _one_rl_stage_last(cls, stages):
        kinds = [s.kind for s in stages]
        if kinds.count("rl") > 1 or ("rl" in kinds and kinds[-1] != "rl"):
            raise ValueError("at most one rl stage, and it must be the last")
        return stages
