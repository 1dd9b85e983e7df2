"""Train/test rows for a recipe: synthetic, a Hugging Face dataset id, or local files.

    data.source: synthetic
    data.source: {hf: openai/gsm8k, name: main, split: train, test_split: test, revision: ...}
    data.source: {path: data/train.jsonl, test_path: data/test.jsonl}   # .jsonl .json .parquet .csv
    data.fields: {prompt: question, answer: final}   # our name: the dataset's column
    data.fields: {answer: reward_model.ground_truth}  # or a dotted path into a nested column
    data.fields: {image: img_path}                    # image or images: local paths, PIL, HF Image

Without a test split, the last `data.test_size` rows of a seeded shuffle are held out, so the
splits are disjoint. Missing columns are errors naming `data.fields`. Local .jsonl and .json files
are read with the json module (`read_json_rows`); parquet, csv and hub ids go through `datasets`.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from ..errors import UserError
from ..vision import check_image, row_images

SOURCE_KEYS = {"hf", "name", "split", "test_split", "revision", "path", "test_path"}
FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def check_source(source) -> None:
    """Validate a `data.source` mapping without loading anything."""
    if source == "synthetic":
        return
    unknown = set(source) - SOURCE_KEYS
    if unknown:
        from ..errors import did_you_mean
        key = sorted(unknown)[0]
        raise UserError(f"data.source.{key}", "unknown key", did_you_mean(key, SOURCE_KEYS))
    for key, value in source.items():   # ids, splits, revisions and paths are all text
        if not isinstance(value, str) or not value:
            raise UserError(f"data.source.{key}", f"expected a non-empty string, got {value!r}",
                            "write the text, quoted if YAML would read a number or yes/no, e.g. revision: '2024'")
    if ("hf" in source) == ("path" in source):
        raise UserError("data.source", "give exactly one of hf: (a dataset id) or path: (a local file)")
    for key in ("path", "test_path"):
        if key in source:
            path = Path(source[key])
            if not path.exists():
                raise UserError(f"data.source.{key}", f"file not found: {path}")
            if path.suffix not in FORMATS:
                raise UserError(f"data.source.{key}", f"unsupported file type {path.suffix!r}",
                                "use .jsonl, .json, .parquet or .csv")


def read_json_rows(path: Path, key: str) -> tuple[list[str], list[dict]]:
    """(columns, rows) of a .jsonl file (one object per line) or a .json file (a list of objects,
    one object, or JSON Lines), as `datasets` reads them: a key missing from a row reads as None,
    a UTF-8 byte-order mark is skipped. Plain json rather than `datasets`: importing that
    (pyarrow, pandas) costs about 80 MB of resident memory and a second for a file a loop reads
    in milliseconds, and a bad line is an error naming it."""
    where = f"data.source.{key}"
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(where, f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})",
                        "save it as UTF-8") from None
    records = None
    if path.suffix == ".json":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            if text.lstrip().startswith("["):   # a list with an error in it, not JSON Lines
                raise UserError(where, f"{path} is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
                                "fix that line, or write one object per line (.jsonl)") from None
        if isinstance(records, dict):
            records = [records]
        elif records is not None and not isinstance(records, list):
            raise UserError(where, f"{path} holds a JSON {type(records).__name__}, not rows",
                            "write a list of objects, or one object per line (.jsonl)")
    if records is None:
        records = []
        for number, line in enumerate(text.split("\n"), 1):   # not splitlines(): U+2028 may sit inside a string
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise UserError(where, f"line {number} of {path} is not JSON: {exc.msg}",
                                    "write one JSON object per line") from None
    for i, row in enumerate(records):
        if not isinstance(row, dict):
            raise UserError(where, f"row {i} of {path} is a {type(row).__name__}, not an object",
                            'each row is an object such as {"prompt": ..., "answer": ...}')
    columns = list(dict.fromkeys(k for row in records for k in row))
    return columns, [{c: row.get(c) for c in columns} for row in records]


def _load(source: dict, which: str) -> tuple[list[str], object]:
    """(column names, rows as dicts) of the train or test split."""
    if "path" in source:
        key = "path" if which == "train" else "test_path"
        path = Path(source[key])
        if path.suffix in (".jsonl", ".json"):
            return read_json_rows(path, key)
        import datasets
        dataset = datasets.load_dataset(FORMATS[path.suffix], data_files=str(path), split="train")
        return dataset.column_names, dataset
    import datasets
    split = source.get("split", "train") if which == "train" else source["test_split"]
    try:
        dataset = datasets.load_dataset(source["hf"], source.get("name"), split=split,
                                        revision=source.get("revision"))
    except Exception as exc:  # the hub raises many types; all mean "could not get it"
        raise UserError("data.source.hf", f"cannot load {source['hf']!r} split {split!r}: "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                        "offline? use a local path: or the synthetic source") from exc
    return dataset.column_names, dataset


def _lookup(row: dict, path: str):
    """`row[path]`, following dots into nested mappings (`reward_model.ground_truth`)."""
    value = row
    for key in path.split("."):
        value = value[key]
    return value


def _chat_text(value):
    """A verl/OpenRLHF chat prompt (a list of {role, content}) becomes its last user message."""
    if isinstance(value, list) and value and all(isinstance(m, dict) and "content" in m for m in value):
        users = [m["content"] for m in value if m.get("role", "user") == "user"]
        return (users or [value[-1]["content"]])[-1]
    return value


def _check_images(rows: list[dict], which: str, base: Path | None) -> None:
    """Each row's image(s) made loadable in place; an error names the first bad row. A relative
    path is tried against the data file's folder too."""
    for i, row in enumerate(rows):
        images = row_images(row)
        if images:
            key = "images" if row.get("images") is not None else "image"
            checked = [check_image(src, f"data row {i} ({which}) {key}", base) for src in images]
            row[key] = checked if key == "images" else checked[0]


def _rows(loaded, fields: dict, task) -> list[dict]:
    """Rows with our field names: `fields` maps ours to the dataset's column, or to a dotted path
    into a nested column (verl parquet: `answer: reward_model.ground_truth`). A chat-format
    prompt column keeps only its last user message."""
    names, dataset = loaded
    columns = set(names)
    first = dataset[0] if len(dataset) else None
    for ours, theirs in fields.items():
        try:
            if first is not None:
                _lookup(first, theirs)
        except (KeyError, TypeError):
            if theirs.split(".")[0] not in columns:
                raise UserError(f"data.fields.{ours}", f"column {theirs!r} not in the dataset",
                                "columns: " + ", ".join(sorted(columns))) from None
            raise UserError(f"data.fields.{ours}", f"{theirs!r} does not lead to a value in the first row",
                            "give the nested keys joined by dots, as in reward_model.ground_truth") from None
    renamed = {theirs for theirs in fields.values() if "." not in theirs}
    rows = []
    for i, row in enumerate(dataset):
        out = {k: v for k, v in row.items() if k not in renamed}
        for ours, theirs in fields.items():
            try:
                out[ours] = _lookup(row, theirs)
            except (KeyError, TypeError):
                raise UserError(f"data.fields.{ours}", f"{theirs!r} does not lead to a value in row {i}",
                                "every row needs the nested keys the first row has") from None
        if "prompt" in out:
            out["prompt"] = _chat_text(out["prompt"])
        rows.append(out)
    for name in task.required_fields:
        if rows and name not in rows[0]:
            raise UserError(f"data.fields.{name}", f"task {task.name!r} needs a {name!r} column",
                            f"map one of: {', '.join(sorted(columns))}")
    return rows


def synthetic_rows(task, split: str, n: int, seed: int, test_size: int) -> list[dict]:
    """`task.synthetic(...)`; its ValueError (the test split leaves no training items) is the
    user's: a UserError naming data.test_size."""
    try:
        return task.synthetic(split, n, seed, test_size=test_size)
    except ValueError as exc:
        raise UserError("data.test_size", str(exc), "lower it, or widen the task through data.params") from None


def load_splits(data, task, seed: int) -> tuple[list[dict], list[dict]]:
    """(train_rows, test_rows) for the recipe's `data` section."""
    if data.source == "synthetic":
        n_train = data.train_size or 10_000
        return (synthetic_rows(task, "train", n_train, seed, data.test_size),
                synthetic_rows(task, "test", data.test_size, seed, data.test_size))
    check_source(data.source)
    folder = lambda key: Path(data.source[key]).parent if key in data.source else None  # noqa: E731
    train = _rows(_load(data.source, "train"), data.fields, task)
    _check_images(train, "train", folder("path"))
    has_test = "test_path" in data.source or "test_split" in data.source
    if has_test:
        test = _rows(_load(data.source, "test"), data.fields, task)
        _check_images(test, "test", folder("test_path"))
    else:
        if len(train) <= data.test_size:
            raise UserError("data.test_size", f"{data.test_size} >= the {len(train)} rows of the data",
                            "lower test_size or give a test split")
        order = list(range(len(train)))
        random.Random(seed).shuffle(order)
        test = [train[i] for i in order[-data.test_size:]]
        train = [train[i] for i in order[:-data.test_size]]
    if data.train_size:
        train = train[:data.train_size]
    return train, test[:data.test_size]
