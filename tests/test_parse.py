"""The strategies' output parsers on the shapes models really give: JSON in fences or prose,
lists numbered a dozen ways, scores as "4/5" or "Score: 4". Each returns a value or a reason,
never raises."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distillery.generate.parse import extract_json, json_fields, numbered_list, score, strip_wrapping


def test_extract_json_finds_the_value_wherever_the_model_put_it():
    assert extract_json('{"a": 1}') == ({"a": 1}, None)
    assert extract_json('Sure! Here it is:\n```json\n{"a": [1, 2]}\n```\nHope this helps.') == ({"a": [1, 2]}, None)
    assert extract_json('The answer is {"a": "x"} as requested.') == ({"a": "x"}, None)
    assert extract_json('["one", "two"]', list) == (["one", "two"], None)
    value, reason = extract_json('{"a": 1,}')  # trailing comma: not JSON
    assert value is None and reason.startswith("malformed_json")
    assert extract_json("")[1].startswith("empty_response")
    assert extract_json('[1, 2]', dict)[1].startswith("malformed_json: no JSON dict")


def test_json_fields_names_what_is_missing_or_wrong():
    assert json_fields('{"q": " What? ", "n": 3}', {"q": str, "n": int}) == ({"q": "What?", "n": 3}, None)
    assert json_fields('{"q": "x"}', {"q": str, "n": int})[1].startswith("missing_field: n")
    assert json_fields('{"q": 3}', {"q": str})[1] == "wrong_type: q is int"
    assert json_fields('{"q": "   "}', {"q": str})[1] == "missing_field: q is empty"
    assert json_fields("no json here", {"q": str})[1].startswith("malformed_json")


def test_numbered_list_reads_the_usual_shapes():
    text = "Here are some tasks:\n1. Write a poem.\n2) Sort a list\n   of numbers.\n3: Name a city.\n"
    assert numbered_list(text) == (["Write a poem.", "Sort a list\nof numbers.", "Name a city."], None)
    assert numbered_list("- a\n- b\n* c") == (["a", "b", "c"], None)
    assert numbered_list('["x", "y"]') == (["x", "y"], None)
    assert numbered_list('Here:\n```json\n["x", "y"]\n```') == (["x", "y"], None)
    inline = '1. Sort the words ["pear", "apple"] alphabetically.\n2. Write a haiku.'
    assert numbered_list(inline) == (['Sort the words ["pear", "apple"] alphabetically.', "Write a haiku."], None)
    items, reason = numbered_list("I cannot help with that.", min_items=1)
    assert items is None and reason.startswith("no_list: found 0")
    assert numbered_list("1. only one", min_items=2)[1].startswith("no_list: found 1")


@pytest.mark.parametrize("text, value", [
    ("Score: 4", 4.0), ("4/5", 4.0), ('{"score": 5}', 5.0), ("I would rate this 3 out of 5.", 3.0),
    ("Reasoning: step 1 is fine, step 12 too.\nScore: 2", 2.0), ("Rating: 4.5", 4.5),
])
def test_score_reads_ratings(text, value):
    assert score(text, 1, 5) == (value, None)


@pytest.mark.parametrize("text", ["I'd rate this a five", "Score: 9", "8/10", ""])
def test_score_without_a_rating_in_range_is_a_reason(text):
    value, reason = score(text, 1, 5)
    assert value is None and reason.split(":")[0] in ("no_score", "empty_response")


def test_strip_wrapping_removes_labels_quotes_and_fences():
    assert strip_wrapping('Rewritten Prompt: "Sort the list in place."') == "Sort the list in place."
    assert strip_wrapping("**New instruction:** Name three rivers.") == "Name three rivers."
    assert strip_wrapping("```\nQuestion: How far?\n```") == "How far?"
    assert strip_wrapping("Plain text stays.") == "Plain text stays."
    assert strip_wrapping(None) == ""


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_parsers_never_raise(text):
    for parse in (extract_json, numbered_list, score, lambda t: json_fields(t, {"a": str})):
        value, reason = parse(text)
        assert (value is None) != (reason is None)  # a value or a reason, never both, never neither
        if value is None:
            assert isinstance(reason, str) and ":" in reason
    assert isinstance(strip_wrapping(text), str)
