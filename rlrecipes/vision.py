"""Image inputs for vision-language policies (the Qwen2-VL family: Qwen2-VL, Qwen2.5-VL).

- Data: a row's `image` (one) or `images` (a list) column holds local file paths, PIL images
  or Hugging Face `Image` features ({"bytes", "path"}); URLs are refused (nothing is fetched).
- A prompt that shows images is an `ImagePrompt`: its text (with one image placeholder
  `<|vision_start|><|image_pad|><|vision_end|>` per image) plus the images, so it travels
  through samplers, SFT, rollouts and eval like any prompt string.
- `VisionProcessor` turns prompts into token ids and pixel inputs: the model's image processor
  (PIL backend, no torchvision) makes `pixel_values` and `image_grid_thw`; each `<|image_pad|>`
  is expanded to grid_t*grid_h*grid_w / merge^2 tokens, as `Qwen2VLProcessor` does.
- `VisionInputs` keeps each row's pixel tensors; the G completions of a prompt share them. A
  forward pass encodes each distinct image once (`mm_encoder_outputs`), without gradient when the
  vision tower is frozen (the default), and the language model gets the M-RoPE inputs
  (`mm_token_type_ids`, `image_grid_thw`) it needs for 3-D positions.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import UserError

VISION_START, IMAGE_PAD, VISION_END, VIDEO_PAD = "<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>"
VISION_TAGS = [VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD]
TOWER_NAMES = ("visual", "vision_tower", "vision_model")   # the vision encoder's module name by family
PLACEHOLDER = VISION_START + IMAGE_PAD + VISION_END


class ImagePrompt(str):
    """A prompt's text together with the images its placeholders stand for (paths or PIL)."""
    images: tuple

    def __new__(cls, text: str, images):
        obj = super().__new__(cls, text)
        obj.images = tuple(images)
        return obj

    def __reduce__(self):  # keep the images when pickled (multi-process gathers)
        return ImagePrompt, (str(self), self.images)


def row_images(row: dict) -> list:
    """The image sources of a data row (`image` or `images` column), [] when it has none."""
    if row.get("images") is not None:
        value = row["images"]
        return list(value) if isinstance(value, (list, tuple)) else [value]
    return [row["image"]] if row.get("image") is not None else []


def check_image(src, where: str, base: Path | None = None):
    """`src` made loadable (a relative path is tried against `base`, the data file's folder);
    a clear error for URLs and missing files."""
    if isinstance(src, dict):   # HF datasets Image feature without decoding
        if src.get("bytes") is None and src.get("path") is None:
            raise UserError(where, "image has neither bytes nor path")
        return src if src.get("bytes") is not None else check_image(src["path"], where, base)
    if isinstance(src, (str, Path)):
        text = str(src)
        if "://" in text:
            raise UserError(where, f"image {text!r} is a URL; nothing is downloaded",
                            "download the images and give local paths")
        path = Path(text).expanduser()
        if not path.exists() and base is not None and (base / path).exists():
            path = base / path
        if not path.exists():
            raise UserError(where, f"image file not found: {text}")
        return str(path)
    if hasattr(src, "convert"):   # a PIL image
        return src
    raise UserError(where, f"unsupported image value of type {type(src).__name__}",
                    "give a local path, a PIL image or a datasets Image feature")


def require_vision(recipe, problem: str) -> None:
    """Images need `model.vision` (else `problem` is the error) and plain, not tool, rollouts."""
    if recipe.model.vision is None:
        raise UserError("model.vision", problem,
                        "set model.vision: {} with a vision-language model (Qwen2-VL family, or tiny)")
    if recipe.generation.tools is not None:
        raise UserError("generation.tools", "tool rollouts do not carry images yet", "drop generation.tools")


def load_image(src):
    """A PIL RGB image from a path, PIL image or {"bytes"/"path"} dict."""
    from PIL import Image
    if isinstance(src, dict):
        src = io.BytesIO(src["bytes"]) if src.get("bytes") is not None else src["path"]
    image = src if hasattr(src, "convert") and not isinstance(src, (str, io.BytesIO)) else Image.open(src)
    return image.convert("RGB")


def attach(prompts: list[str], rows: list[dict]) -> list[str]:
    """Prompts of rows with images become `ImagePrompt`s: one placeholder per image before the
    text unless the (chat-formatted) text already holds them."""
    out = []
    for prompt, row in zip(prompts, rows):
        images = row_images(row)
        if not images:
            out.append(prompt)
            continue
        have = prompt.count(IMAGE_PAD)
        if have not in (0, len(images)):
            raise UserError("data", f"prompt has {have} image placeholders for {len(images)} images")
        out.append(ImagePrompt(prompt if have else PLACEHOLDER * len(images) + prompt, images))
    return out


def chat_content(text: str, n_images: int) -> list[dict]:
    """A user message's content for a chat template: the images first, then the text."""
    return [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": text}]


@dataclass
class VisionInputs:
    """Pixel inputs of N sequences: row i shows images with patches `pixel_values[i]` [P_i, D]
    and grids `grid_thw[i]` [images_i, 3]. Rows of the same prompt share the tensors."""
    pixel_values: list[torch.Tensor]
    grid_thw: list[torch.Tensor]
    image_token_id: int

    def select(self, idx) -> "VisionInputs":
        idx = torch.as_tensor(idx, dtype=torch.long).tolist()
        return VisionInputs([self.pixel_values[i] for i in idx], [self.grid_thw[i] for i in idx], self.image_token_id)

    @staticmethod
    def cat(parts: list["VisionInputs | None"], sizes: list[int]) -> "VisionInputs | None":
        """The rows of several (None for a text-only part of `size` rows: no images)."""
        known = [p for p in parts if p is not None]
        if not known:
            return None
        empty_pv, empty_grid = known[0].pixel_values[0][:0], known[0].grid_thw[0][:0]
        pv, grid = [], []
        for part, n in zip(parts, sizes):
            pv += part.pixel_values if part is not None else [empty_pv] * n
            grid += part.grid_thw if part is not None else [empty_grid] * n
        return VisionInputs(pv, grid, known[0].image_token_id)

    def has_images(self) -> bool:
        return any(len(g) for g in self.grid_thw)

    def pixels(self, device) -> torch.Tensor:
        """All rows' patches in row order (what `generate` takes as `pixel_values`)."""
        return torch.cat([p for p in self.pixel_values if len(p)]).to(device)

    def token_kwargs(self, input_ids: torch.Tensor) -> dict:
        """The M-RoPE inputs for `input_ids` (these rows): image-token types and grids."""
        return {"mm_token_type_ids": (input_ids == self.image_token_id).int(),
                "image_grid_thw": torch.cat([g for g in self.grid_thw if len(g)]).to(input_ids.device)}

    def model_kwargs(self, model, input_ids: torch.Tensor) -> dict:
        """Keyword arguments for a forward pass over `input_ids` (these rows): each distinct
        image set encoded once, with gradient only when the vision tower trains."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling
        if not self.has_images():
            return {}
        core = getattr(model, "module", model)
        first: dict[int, int] = {}   # a pixel tensor (by identity) -> the first row showing it
        for i, pv in enumerate(self.pixel_values):
            if len(pv):
                first.setdefault(id(pv), i)
        device = input_ids.device
        patches = torch.cat([self.pixel_values[i] for i in first.values()]).to(device)
        grids = torch.cat([self.grid_thw[i] for i in first.values()]).to(device)
        trains = any(p.requires_grad for p in tower(core).parameters())
        with torch.set_grad_enabled(trains and torch.is_grad_enabled()):
            feats = core.get_image_features(pixel_values=patches, image_grid_thw=grids).pooler_output
        per_set, start = {}, 0   # one feature tensor per image, grouped by pixel tensor
        for key, i in first.items():
            n = len(self.grid_thw[i])
            per_set[key], start = feats[start:start + n], start + n
        row_feats = tuple(f for pv in self.pixel_values if len(pv) for f in per_set[id(pv)])
        return {**self.token_kwargs(input_ids),
                "mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=row_feats)}}


def tower(model):
    """The vision encoder module of a (possibly peft-wrapped) VLM."""
    for module_name, module in model.named_modules():
        if module_name.rsplit(".", 1)[-1] in TOWER_NAMES:
            return module
    raise UserError("model.vision", f"{type(model).__name__} has no vision tower ({', '.join(TOWER_NAMES)})",
                    "use a vision-language model, or drop model.vision")


class VisionProcessor:
    """Prompts -> (ids, mask, VisionInputs) for the Qwen2-VL family; see the module docstring."""

    def __init__(self, image_processor, tokenizer, image_token_id: int, merge_size: int):
        self.image_processor, self.tokenizer = image_processor, tokenizer
        self.image_token_id, self.merge = image_token_id, merge_size

    @classmethod
    def load(cls, path: str, tokenizer, cfg, trust_remote_code: bool = False) -> "VisionProcessor":
        from transformers import AutoConfig, AutoImageProcessor
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        image_token_id = getattr(config, "image_token_id", None)
        merge = getattr(getattr(config, "vision_config", None), "spatial_merge_size", None)
        if image_token_id is None or merge is None:
            raise UserError("model.vision", f"{path!r} ({config.model_type}) is not a Qwen2-VL-family model "
                            "(no image_token_id / vision_config.spatial_merge_size)",
                            "use Qwen2-VL or Qwen2.5-VL, or drop model.vision")
        sizes = {k: v for k, v in (("min_pixels", cfg.min_pixels), ("max_pixels", cfg.max_pixels)) if v}
        try:
            image_processor = AutoImageProcessor.from_pretrained(path, backend="pil", **sizes)
        except (OSError, ValueError) as exc:
            raise UserError("model.name_or_path", f"cannot load the image processor from {path!r}: "
                            f"{str(exc).splitlines()[0]}") from exc
        return cls(image_processor, tokenizer, image_token_id, merge)

    def expand(self, prompts: list[str]) -> tuple[list[str], VisionInputs]:
        """(texts with each placeholder expanded, per-prompt VisionInputs)."""
        pv, grid, texts = [], [], []
        for prompt in prompts:
            images = getattr(prompt, "images", ())
            if prompt.count(IMAGE_PAD) != len(images):
                raise UserError("data", f"prompt has {prompt.count(IMAGE_PAD)} image placeholders for "
                                f"{len(images)} images: {str(prompt)[:60]!r}")
            if not images:
                pv.append(torch.zeros(0, 1))
                grid.append(torch.zeros(0, 3, dtype=torch.long))
                texts.append(str(prompt))
                continue
            out = self.image_processor(images=[load_image(s) for s in images], return_tensors="pt")
            pv.append(out["pixel_values"])
            grid.append(out["image_grid_thw"])
            pieces = str(prompt).split(IMAGE_PAD)
            counts = (out["image_grid_thw"].prod(-1) // self.merge ** 2).tolist()
            texts.append(pieces[0] + "".join(IMAGE_PAD * n + rest for n, rest in zip(counts, pieces[1:])))
        width = max((p.shape[1] for p in pv if len(p)), default=1)
        pv = [p if len(p) else torch.zeros(0, width) for p in pv]
        return texts, VisionInputs(pv, grid, self.image_token_id)

    def encode(self, prompts: list[str], device) -> tuple[torch.Tensor, torch.Tensor, VisionInputs]:
        """Left-padded prompt ids and mask with expanded placeholders, and the pixel inputs."""
        texts, vision = self.expand(prompts)
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        return enc["input_ids"].to(device), enc["attention_mask"].to(device), vision

    def special_ids(self) -> list[int]:
        """Token ids a completion must never contain (they would be read as image slots)."""
        ids = self.tokenizer.convert_tokens_to_ids(VISION_TAGS)
        unk = self.tokenizer.unk_token_id
        return sorted({i for i in ids if i is not None and i != unk} | {self.image_token_id})

    def save_pretrained(self, path) -> None:
        self.image_processor.save_pretrained(path)


def processor_of(tokenizer) -> VisionProcessor | None:
    """The VisionProcessor `model.load_tokenizer` attached to a VLM's tokenizer (None for text)."""
    return getattr(tokenizer, "vision", None)
