import json

import pytest

from rlrecipes.config import DataConfig
from rlrecipes.errors import UserError
from rlrecipes.tasks import load_splits
from rlrecipes.tasks.arith import Arith
from rlrecipes.tasks.base import Task, extract_answer, same_answer


def test_arith_gold_is_correct_and_scored_one():
    task = Arith()
    row = {"prompt": "47+38=", "answer": "85", "a": 47, "b": 38}
    assert task.gold(row) == "<think>7+8=15;4+3+1=8</think><answer>85</answer>"
    assert task.score(task.gold(row), row) == 1.0
    assert task.score("<answer>84</answer>", row) == 0.0
    assert Arith(think=False).gold(row) == "<answer>85</answer>"


def test_arith_splits_are_disjoint_and_seeded():
    task = Arith(max_operand=20)
    data = DataConfig(task="arith", test_size=50, train_size=2000)
    train, test = load_splits(data, task, seed=0)
    assert len(test) == 50 and len(train) == 2000
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
    train2, test2 = load_splits(data, task, seed=0)
    assert train == train2 and test == test2
    assert all(r["answer"] == str(r["a"] + r["b"]) for r in train)


def test_extract_and_compare():
    assert extract_answer("<answer>1</answer> x <answer> 42 </answer>") == "42"
    assert extract_answer("42") is None
    assert same_answer("42.0", 42) and not same_answer("41", "42") and same_answer("abc", "abc")


def _write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows))


def test_local_jsonl_with_field_mapping_and_holdout(tmp_path):
    rows = [{"question": f"{i}+1=", "final": str(i + 1), "id": i} for i in range(30)]
    _write_jsonl(tmp_path / "train.jsonl", rows)
    data = DataConfig(task="arith", source={"path": str(tmp_path / "train.jsonl")},
                      fields={"prompt": "question", "answer": "final"}, test_size=5)
    train, test = load_splits(data, Task(), seed=0)
    assert len(train) == 25 and len(test) == 5
    assert {r["id"] for r in train}.isdisjoint({r["id"] for r in test})
    assert set(train[0]) == {"prompt", "answer", "id"}


def test_local_parquet_with_test_file(tmp_path):
    import datasets
    datasets.Dataset.from_list([{"prompt": "1+1=", "answer": "2"}] * 4).to_parquet(str(tmp_path / "tr.parquet"))
    datasets.Dataset.from_list([{"prompt": "2+2=", "answer": "4"}] * 3).to_parquet(str(tmp_path / "te.parquet"))
    data = DataConfig(task="arith", source={"path": str(tmp_path / "tr.parquet"),
                                            "test_path": str(tmp_path / "te.parquet")}, test_size=10)
    train, test = load_splits(data, Task(), seed=0)
    assert len(train) == 4 and len(test) == 3 and test[0]["answer"] == "4"


def test_missing_column_names_the_field(tmp_path):
    _write_jsonl(tmp_path / "d.jsonl", [{"question": "1+1=", "solution": "2"}] * 3)
    data = DataConfig(task="arith", source={"path": str(tmp_path / "d.jsonl")},
                      fields={"prompt": "question", "answer": "final"}, test_size=1)
    with pytest.raises(UserError, match=r"data.fields.answer: column 'final' not in the dataset"):
        load_splits(data, Task(), seed=0)
    data = DataConfig(task="arith", source={"path": str(tmp_path / "d.jsonl")},
                      fields={"prompt": "question"}, test_size=1)
    with pytest.raises(UserError, match=r"data.fields.answer: task 'task' needs a 'answer' column"):
        load_splits(data, Task(), seed=0)


def test_hub_dataset_id_goes_through_load_dataset(monkeypatch):
    import datasets
    calls = []

    def fake_load(name, config=None, split=None, revision=None):
        calls.append((name, config, split, revision))
        return datasets.Dataset.from_list([{"question": "q", "answer": "#### 3"}] * 4)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    data = DataConfig(task="arith", source={"hf": "openai/gsm8k", "name": "main", "test_split": "test"},
                      fields={"prompt": "question"}, test_size=2)
    train, test = load_splits(data, Task(), seed=0)
    assert calls == [("openai/gsm8k", "main", "train", None), ("openai/gsm8k", "main", "test", None)]
    assert len(train) == 4 and len(test) == 2


def test_hub_failure_is_a_user_error(monkeypatch):
    import datasets

    def offline(*a, **k):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    data = DataConfig(task="arith", source={"hf": "openai/gsm8k"}, test_size=2)
    with pytest.raises(UserError, match="data.source.hf: cannot load 'openai/gsm8k'"):
        load_splits(data, Task(), seed=0)


def test_local_json_files_read_without_datasets(tmp_path):
    """.jsonl and .json rows come through the json module (no pyarrow/pandas import); a key a
    row lacks reads as None, as datasets reads it; a list-of-objects .json works the same."""
    import subprocess
    import sys
    rows = [{"prompt": "1+1=", "answer": "2", "id": 0}, {"prompt": "2+2=", "answer": "4"}]
    _write_jsonl(tmp_path / "a.jsonl", rows)
    (tmp_path / "b.json").write_text(json.dumps(rows))
    for name in ("a.jsonl", "b.json"):
        data = DataConfig(task="arith", source={"path": str(tmp_path / name), "test_path": str(tmp_path / name)},
                          test_size=10)
        train, test = load_splits(data, Task(), seed=0)
        assert train == [{"prompt": "1+1=", "answer": "2", "id": 0}, {"prompt": "2+2=", "answer": "4", "id": None}]
    # as datasets reads them too: U+2028 unescaped inside a string, a byte-order mark, one object
    (tmp_path / "c.jsonl").write_bytes("\ufeff".encode() + json.dumps({"prompt": "a\u2028b", "answer": "1"},
                                                                      ensure_ascii=False).encode() + b"\n")
    (tmp_path / "c.json").write_text(json.dumps({"prompt": "a", "answer": "1"}))
    for name, prompt in (("c.jsonl", "a\u2028b"), ("c.json", "a")):
        data = DataConfig(task="arith", source={"path": str(tmp_path / name), "test_path": str(tmp_path / name)})
        assert load_splits(data, Task(), seed=0)[0] == [{"prompt": prompt, "answer": "1"}]
    code = ("import sys; from rlrecipes.config import DataConfig; from rlrecipes.tasks import load_splits; "
            "from rlrecipes.tasks.base import Task; "
            f"load_splits(DataConfig(task='arith', source={{'path': {str(tmp_path / 'a.jsonl')!r}}}, test_size=1), Task(), 0); "
            "print('datasets' in sys.modules, 'pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_bad_json_rows_name_the_line(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"prompt": "1+1=", "answer": "2"}\n\n{"prompt": "2+2=", answer: 4}\n')
    data = DataConfig(task="arith", source={"path": str(tmp_path / "d.jsonl")}, test_size=1)
    with pytest.raises(UserError, match=r"data.source.path: line 3 of .*d.jsonl is not JSON"):
        load_splits(data, Task(), seed=0)
    (tmp_path / "d.json").write_text('[{"prompt": "1+1=", "answer": "2"},\n {"prompt": 3 "answer": "4"}]')
    data = DataConfig(task="arith", source={"path": str(tmp_path / "d.json")}, test_size=1)
    with pytest.raises(UserError, match=r"data.source.path: .*d.json is not JSON: Expecting ',' delimiter \(line 2"):
        load_splits(data, Task(), seed=0)
    (tmp_path / "d.json").write_bytes(b'[{"prompt": "caf\xe9"}]')
    with pytest.raises(UserError, match=r"data.source.path: .*d.json is not UTF-8 text"):
        load_splits(data, Task(), seed=0)
    _write_jsonl(tmp_path / "e.jsonl", [{"q": "1+1=", "m": {"gt": "2"}}, {"q": "2+2=", "m": {}}])
    data = DataConfig(task="arith", source={"path": str(tmp_path / "e.jsonl")},
                      fields={"prompt": "q", "answer": "m.gt"}, test_size=1)
    with pytest.raises(UserError, match=r"data.fields.answer: 'm.gt' does not lead to a value in row 1"):
        load_splits(data, Task(), seed=0)
