"""Image inputs: prompts that carry images, placeholder expansion, collation through rollouts,
log-probs with encoder outputs shared across a group, masking, frozen towers, data loading."""
import json
import math
import pickle
import random
from pathlib import Path

import pytest
import torch

from rlrecipes.config import load_recipe
from rlrecipes.errors import UserError
from rlrecipes.logprobs import token_logprobs
from rlrecipes.model import attach_adapter, load_base, load_tokenizer, resolve_path
from rlrecipes.rollout.generate import generate, replace_rows, stack
from rlrecipes.tasks.images import CELL, CELLS, RED, Squares, draw
from rlrecipes.vision import IMAGE_PAD, PLACEHOLDER, ImagePrompt, attach, check_image, processor_of

from .conftest import RECIPES

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def vlm():
    cfg = load_recipe("recipes/grpo.yaml", "tiny", ["model.vision={}", "data.task=squares"]).model
    tok = load_tokenizer(cfg)
    model = load_base(cfg, CPU)
    return cfg, tok, model


def _prompts(n=2, seed=0):
    rows = Squares().synthetic("test", n, seed)
    return rows, attach([r["prompt"] for r in rows], rows)


def test_image_prompt_is_its_text_and_keeps_images_through_lists_and_pickle():
    rows, prompts = _prompts(2)
    p = prompts[0]
    assert p == PLACEHOLDER + "count:" and isinstance(p, str) and p.images == (rows[0]["image"],)
    repeated = [q for q in prompts for _ in range(3)]
    assert repeated[4].images[0] is rows[1]["image"]
    back = pickle.loads(pickle.dumps(p))
    assert back == p and back.images[0].size == (56, 56)
    assert attach(["no image"], [{"prompt": "x"}]) == ["no image"]  # text rows stay plain strings


def test_attach_keeps_existing_placeholders_and_rejects_a_wrong_count():
    img = draw({}, random.Random(0))
    assert attach([PLACEHOLDER + "q"], [{"image": img}])[0] == PLACEHOLDER + "q"
    with pytest.raises(UserError, match="2 image placeholders for 1 images"):
        attach([PLACEHOLDER * 2 + "q"], [{"image": img}])


def test_check_image_refuses_urls_and_missing_files_and_resolves_relative_paths(tmp_path):
    with pytest.raises(UserError, match="is a URL"):
        check_image("https://x.org/a.png", "data row 3 (train) image")
    with pytest.raises(UserError, match="data row 3.*not found: nope.png"):
        check_image("nope.png", "data row 3 (train) image")
    draw({}, random.Random(0)).save(tmp_path / "a.png")
    assert check_image("a.png", "x", base=tmp_path) == str(tmp_path / "a.png")


def test_squares_images_hold_the_counted_red_squares():
    # count, per cell, whether red pixels are present: must equal the row counts and the answer
    task = Squares(distractors=True)
    for row in task.synthetic("train", 20, 0):
        px = row["image"].load()
        red_cells = [[any(px[x, y] == RED for x in range(c * CELL, (c + 1) * CELL) for y in range(r * CELL, (r + 1) * CELL))
                      for c in range(CELLS)] for r in range(CELLS)]
        assert [sum(r) for r in red_cells] == row["row_counts"]
        assert sum(row["row_counts"]) == int(row["answer"])
        assert task.gold(row) == f"<think>{'+'.join(map(str, row['row_counts']))}={row['answer']}</think><answer>{row['answer']}</answer>"
    test = Squares().synthetic("test", 5, 0)
    assert [r["image"].tobytes() for r in test] == [r["image"].tobytes() for r in Squares().synthetic("test", 5, 9)]


def test_processor_expands_each_placeholder_to_the_grid_tokens(vlm):
    _, tok, _ = vlm
    proc = processor_of(tok)
    _, prompts = _prompts(2)
    ids, mask, vision = proc.encode(prompts + ["text only"], CPU)
    # a 56x56 image: grid 1x4x4 patches of 14 px, merged 2x2 -> 4 image tokens
    assert [g.tolist() for g in vision.grid_thw[:2]] == [[[1, 4, 4]], [[1, 4, 4]]]
    assert (ids == proc.image_token_id).sum(1).tolist() == [4, 4, 0]
    assert vision.pixel_values[0].shape == (16, 3 * 2 * 14 * 14) and len(vision.pixel_values[2]) == 0
    assert mask[2].sum() == len("text only")  # left-padded
    assert proc.image_token_id in proc.special_ids()


def test_rollout_rows_keep_their_own_images_through_select_stack_and_replace(vlm):
    cfg, tok, model = vlm
    torch.manual_seed(0)
    gen = load_recipe("recipes/grpo.yaml", "tiny").generation.model_copy(update={"max_new_tokens": 6})
    _, prompts = _prompts(2)
    ro = generate(model, tok, prompts, gen, CPU, repeat=3)
    v = ro.vision
    assert len(ro) == 6 and v.pixel_values[0] is v.pixel_values[2] and v.pixel_values[3] is not v.pixel_values[0]
    assert not (ro.completion_ids_NT == processor_of(tok).image_token_id).any()  # never an image slot
    sub = ro.select([4, 0])
    assert sub.vision.pixel_values[0] is v.pixel_values[4] and sub.vision.pixel_values[1] is v.pixel_values[0]
    both = stack([ro, sub], tok.pad_token_id)
    assert both.vision.pixel_values[7] is v.pixel_values[0]
    other = generate(model, tok, ["plain"], gen, CPU, repeat=1)
    swapped = replace_rows(ro, [1, 5], stack([other, other], tok.pad_token_id), [0, 1], tok.pad_token_id,
                           keep_prompt=[False, True])
    assert len(swapped.vision.pixel_values[1]) == 0          # replaced by the text-only prompt
    assert swapped.vision.pixel_values[5] is v.pixel_values[5]  # kept prompt, kept image


def test_logprobs_share_one_encoding_and_equal_unpadded_per_row_forwards(vlm):
    cfg, tok, model = vlm
    torch.manual_seed(1)
    gen = load_recipe("recipes/grpo.yaml", "tiny").generation.model_copy(update={"max_new_tokens": 5})
    _, prompts = _prompts(2)
    prompts[1] = ImagePrompt(prompts[1] + "longer prompt", prompts[1].images)   # forces left padding
    ro = generate(model, tok, prompts + ["a text-only prompt"], gen, CPU, repeat=2)
    calls = []
    real = model.model.get_image_features
    model.model.get_image_features = lambda pixels, *a, **k: calls.append(pixels.shape[0]) or real(pixels, *a, **k)
    try:
        logp, _ = token_logprobs(model, ro.prompt_ids_NP, ro.prompt_mask_NP, ro.completion_ids_NT,
                                 ro.completion_mask_NT, vision=ro.vision)
        text = ro.select([4, 5])   # the text-only rows alone: plain positions, no encoder
        logp_text, _ = token_logprobs(model, text.prompt_ids_NP, text.prompt_mask_NP, text.completion_ids_NT,
                                      text.completion_mask_NT, vision=text.vision)
    finally:
        model.model.get_image_features = real
    assert calls == [32]   # two distinct images of 16 patches, encoded once for the 4 image rows
    for i in range(6):
        keep = ro.prompt_mask_NP[i].bool()
        ids = torch.cat([ro.prompt_ids_NP[i][keep], ro.completion_ids_NT[i]])[None]
        pixels = {} if i >= 4 else {"pixel_values": ro.vision.pixel_values[i], "image_grid_thw": ro.vision.grid_thw[i],
                                    "mm_token_type_ids": (ids == processor_of(tok).image_token_id).int()}
        with torch.no_grad():
            logits = model(input_ids=ids, **pixels).logits[0]
        T = ro.completion_ids_NT.shape[1]
        ref = torch.log_softmax(logits[-T - 1:-1], -1).gather(-1, ro.completion_ids_NT[i][:, None])[:, 0]
        m = ro.completion_mask_NT[i].bool()
        assert torch.allclose(logp[i][m], ref[m], atol=1e-5), i
        if i >= 4:
            assert torch.allclose(logp_text[i - 4][m], ref[m], atol=1e-5), i


def test_lora_and_qlora_leave_the_vision_tower_frozen_and_unquantised(vlm):
    import bitsandbytes as bnb
    cfg, _, _ = vlm
    for adapter in ("lora", "qlora"):
        c = cfg.model_copy(update={"adapter": adapter})
        model = attach_adapter(load_base(c, CPU, quantize=adapter == "qlora"), c)
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        assert trainable and all("lora_" in n and ".visual." not in n for n in trainable), adapter
        visual = [m for n, m in model.named_modules() if ".visual." in n]
        assert not any(isinstance(m, bnb.nn.Linear4bit) for m in visual)
        if adapter == "qlora":
            assert any(isinstance(m, bnb.nn.Linear4bit) for n, m in model.named_modules() if "language_model" in n)
    c = cfg.model_copy(update={"adapter": "lora", "vision": cfg.vision.model_copy(update={"train_tower": True})})
    model = attach_adapter(load_base(c, CPU), c)
    assert any(".visual." in n for n, p in model.named_parameters() if p.requires_grad)


def test_jsonl_rows_with_relative_image_paths_load_and_a_missing_one_names_its_row(tmp_path, monkeypatch):
    from rlrecipes.registry import get
    from rlrecipes.tasks import load_splits
    rows = Squares().synthetic("train", 6, 0)
    (tmp_path / "img").mkdir()
    lines = []
    for i, row in enumerate(rows):
        row["image"].save(tmp_path / "img" / f"{i}.png")
        lines.append(json.dumps({"question": "count:", "answer": row["answer"], "img": f"img/{i}.png"}))
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(tmp_path.parent)   # relative paths resolve against the file's folder
    data = load_recipe(RECIPES / "grpo.yaml", "tiny", ["data.task=squares", "model.vision={}", f"data.source={{path: {tmp_path / 'train.jsonl'}}}",
                                "data.fields={prompt: question, image: img}", "data.test_size=2"]).data
    train, test = load_splits(data, get("task", "squares")(), 0)
    assert len(train) == 4 and all(r["image"].startswith(str(tmp_path)) for r in train + test)
    (tmp_path / "img" / "3.png").unlink()
    with pytest.raises(UserError, match=r"data row 3 \(train\) image: image file not found: img/3.png"):
        load_splits(data, get("task", "squares")(), 0)


def test_image_rows_need_a_vision_model():
    from rlrecipes.run import check_modality
    with pytest.raises(UserError, match="model.vision.*'squares' shows images; the model is text-only"):
        load_recipe("recipes/grpo.yaml", "tiny", ["data.task=squares"])   # caught by validate
    r = load_recipe("recipes/grpo.yaml", "tiny")   # a text task whose (real) rows carry images
    with pytest.raises(UserError, match="model.vision.*rows have images but the model is text-only"):
        check_modality(r, Squares().synthetic("test", 1, 0))


def test_tiny_vlm_saves_its_image_processor_with_the_weights(vlm):
    cfg, _, _ = vlm
    path = resolve_path(cfg)
    assert "tiny-vl-" in path and (Path(path) / "preprocessor_config.json").exists()
    assert IMAGE_PAD in load_tokenizer(cfg).get_vocab()


@pytest.mark.parametrize("adapter", ["lora", "qlora"])
def test_tiny_vlm_grpo_run_moves_the_adapter_with_finite_loss(adapter, tmp_path):
    from safetensors.torch import load_file

    from rlrecipes.run import train

    from .conftest import FAST
    r = load_recipe(RECIPES / "grpo.yaml", "tiny", FAST + [
        "model.vision={}", "data.task=squares", "data.train_size=64", f"model.adapter={adapter}",
        "algorithm.kl.beta=0.04"])   # KL: the reference (adapter disabled) sees the images too
    summary = train(r, str(tmp_path / "run"), say=lambda *a: None)
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in steps if "loss" in row]
    assert len(steps) == 2 and all(math.isfinite(row["loss"]) and math.isfinite(row["kl"]) for row in steps)
    assert "pass@1" in summary["eval"]["end"]
    weights = load_file(tmp_path / "run" / "final" / "adapter_model.safetensors")
    assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)


def test_chat_template_places_the_image_inside_the_user_turn_once(vlm):
    from rlrecipes.run import format_prompts
    _, tok, _ = vlm
    tok = __import__("copy").deepcopy(tok)
    # the shape of Qwen2-VL's template: an {"type": "image"} item renders as the placeholder
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.content is string %}{{ m.content }}"
                         "{% else %}{% for c in m.content %}{% if c.type == 'image' %}<|vision_start|><|image_pad|>"
                         "<|vision_end|>{% else %}{{ c.text }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
                         "{% endfor %}<|im_start|>assistant\n")
    rows = Squares().synthetic("test", 1, 0)
    [p] = format_prompts(tok, ["count:"], True, rows)
    assert isinstance(p, ImagePrompt) and p.count(IMAGE_PAD) == 1
    assert p == "<|im_start|>user\n" + PLACEHOLDER + "count:<|im_end|>\n<|im_start|>assistant"
    assert format_prompts(tok, ["count:"], True) == ["<|im_start|>user\ncount:<|im_end|>\n<|im_start|>assistant"]


def test_sft_batch_expands_the_image_and_masks_it_out_of_the_labels(vlm):
    from rlrecipes.sft import sft_batch
    _, tok, model = vlm
    rows, prompts = _prompts(2)
    ids, attn, labels, vision = sft_batch(tok, prompts, [Squares().gold(r) for r in rows], CPU)
    image = processor_of(tok).image_token_id
    assert (ids == image).sum(1).tolist() == [4, 4] and vision is not None
    assert (labels[ids == image] == -100).all()   # prompt tokens, image slots included, are not trained
    gold = tok(Squares().gold(rows[0]), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert labels[0][labels[0] != -100].tolist() == gold
    out = model(input_ids=ids, attention_mask=attn, labels=labels, **vision.model_kwargs(model, ids))
    assert torch.isfinite(out.loss)
