from __future__ import annotations

from pathlib import Path

import pytest

from distillery.errors import RecipeError
from distillery.recipe import Recipe
from tests.helpers import GSM8K_TRAIN, REPO


def base(**extra):
    data = {"seeds": {"path": str(GSM8K_TRAIN)}, "teacher": {"model": "m"}}
    data.update(extra)
    return data


def error_of(data) -> str:
    with pytest.raises(RecipeError) as e:
        Recipe.from_dict(data, source="r.yaml")
    return str(e.value)


def test_unknown_key_named_with_path_and_hint():
    msg = error_of(base(teacher={"model": "m", "sampling": {"temprature": 0.5}}))
    assert msg == "r.yaml: teacher.sampling.temprature: unknown key (did you mean 'temperature'?)"


def test_unknown_top_level_section():
    assert "techer: unknown key (did you mean 'teacher'?)" in error_of({"seeds": {"path": str(GSM8K_TRAIN)}, "techer": {}})


def test_unknown_key_inside_a_stage_entry():
    msg = error_of(base(filters=[{"type": "length", "max_tokns": 3}]))
    assert "filters.0.max_tokns: unknown key (did you mean 'max_tokens'?)" in msg


def test_unknown_stage_type_lists_the_known_ones():
    msg = error_of(base(filters=[{"type": "lenght"}]))
    assert "filters.0: unknown type 'lenght'" in msg and "'length'" in msg and "'repetition'" in msg


def test_wrong_type_names_key_and_value():
    msg = error_of(base(teacher={"model": "m", "concurrency": "lots"}))
    assert "teacher.concurrency:" in msg and "'lots'" in msg


def test_missing_seed_file_is_reported_before_work(tmp_path: Path):
    msg = error_of(base(seeds={"path": str(tmp_path / "nope.jsonl")}))
    assert "seeds.path: file not found" in msg and "nope.jsonl" in msg


def test_teacher_required_unless_curating():
    assert "a teacher is needed" in error_of({"seeds": {"path": str(GSM8K_TRAIN)}})
    r = Recipe.from_dict({"seeds": {"path": str(GSM8K_TRAIN), "response_field": "answer"}})
    assert r.generation.strategy == "curate" and r.response_template() == "{{ answer }}"


def test_yaml_file_relative_paths_and_overrides():
    r = Recipe.from_yaml(REPO / "recipes" / "gsm8k.yaml", {"seeds.limit": 7, "teacher.model": "x"})
    assert r.seeds.limit == 7 and r.teacher.model == "x"
    assert r.resolve(r.seeds.path).exists()


def test_invalid_yaml_and_non_mapping(tmp_path: Path):
    p = tmp_path / "r.yaml"
    p.write_text("seeds: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        Recipe.from_yaml(p)
    p.write_text("- a\n- b\n")
    with pytest.raises(RecipeError, match="mapping of sections"):
        Recipe.from_yaml(p)


def test_data_hash_ignores_operational_settings_only():
    a = Recipe.from_dict(base())
    b = Recipe.from_dict(base(teacher={"model": "m", "concurrency": 99}, output={"dir": "elsewhere"}))
    c = Recipe.from_dict(base(teacher={"model": "m", "sampling": {"temperature": 0.1}}))
    assert a.data_hash() == b.data_hash()
    assert a.data_hash() != c.data_hash()


def test_resolved_recipe_round_trips(tmp_path: Path):
    r = Recipe.from_yaml(REPO / "recipes" / "gsm8k.yaml")
    p = tmp_path / "again.yaml"
    text = r.to_yaml().replace("../data/gsm8k/train.jsonl.gz", str(REPO / "data/gsm8k/train.jsonl.gz"))
    p.write_text(text)
    again = Recipe.from_yaml(p)
    assert again.teacher == r.teacher and again.generation == r.generation and again.verifiers == r.verifiers
