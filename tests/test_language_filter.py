"""The language filter on real text: English GSM8K vs German and French sentences, code handling."""

from __future__ import annotations

import json
import re
import time

import pytest

from distillery.filter.language import LanguageConfig, LanguageFilter, letter_count, prose_only
from distillery.records import new_record
from tests.helpers import GSM8K_TEST, read_jsonl

GERMAN = [
    "Der Zug nach Berlin hatte heute Morgen eine Stunde Verspätung, deshalb kamen wir erst am Nachmittag an.",
    "Wie viele Äpfel bleiben übrig, wenn Anna drei von zwölf Äpfeln an ihre Freunde verschenkt?",
]
FRENCH = [
    "Marie a acheté trois baguettes à la boulangerie, puis elle est rentrée chez elle pour préparer le dîner.",
    "Combien de billes reste-t-il à Paul s'il en donne la moitié à sa sœur et garde le reste ?",
]


def rec(response: str, question: str = "q?", **seed) -> dict:
    return new_record(id="r", response=response, seed=seed, prompt=[{"role": "user", "content": question}])


def detail(record: dict) -> dict:
    return json.loads(record["verdicts"][-1]["detail"])


def test_english_gsm8k_passes_german_and_french_are_rejected_with_the_language():
    questions = [r["question"] for r in read_jsonl(GSM8K_TEST, 300)]
    stage = LanguageFilter(LanguageConfig())
    english = [rec(q) for q in questions]
    foreign = [rec(t) for t in GERMAN + FRENCH]
    kept = stage.apply(english + foreign)
    assert len(kept) == len(english)  # every GSM8K question is judged English, every foreign one rejected
    assert all(detail(r)["language"] == "en" for r in english)
    for record, code in zip(foreign, ["de", "de", "fr", "fr"], strict=True):
        assert re.fullmatch(rf"wrong_language: {code} \([01]\.\d\d\) not in \[en\]", record["reject_reason"]), record["reject_reason"]
        assert record["reject_stage"] == "language" and detail(record)["confidence"] > 0.5
    assert stage.stats.records_in == 304 and stage.stats.records_out == 300
    assert stage.stats.reasons == {"wrong_language": 4}


def test_allowing_a_language_keeps_it():
    stage = LanguageFilter(LanguageConfig(languages=["en", "de"]))
    records = [rec(GERMAN[0]), rec(FRENCH[0])]
    stage.apply(records)
    assert records[0]["accepted"] and detail(records[0])["language"] == "de"
    assert records[1]["reject_reason"].startswith("wrong_language: fr (") and records[1]["reject_reason"].endswith("not in [en, de]")


def test_low_confidence_on_short_ambiguous_text():
    stage = LanguageFilter(LanguageConfig(min_confidence=0.9))
    short, clear = rec("Bobbie has 18 crayons and Lizzie has 27 crayons."), rec(read_jsonl(GSM8K_TEST, 1)[0]["question"])
    stage.apply([short, clear])
    m = re.fullmatch(r"low_confidence: en \((0\.\d\d)\) < 0\.9", short["reject_reason"] or "")
    assert m and float(m.group(1)) < 0.9
    assert clear["accepted"] and detail(clear)["confidence"] >= 0.9


def test_code_is_stripped_before_detection_and_bare_programs_are_skipped():
    program = "```python\ndef solution():\n    apples = 12 - 3\n    return apples\n```"
    stage = LanguageFilter(LanguageConfig())
    bare = rec(program)
    german_with_code = rec(GERMAN[1] + "\n\n" + program + "\nDie Antwort ist neun Äpfel.")
    english_with_code = rec("We subtract the apples she gave away.\n" + program + "\nSo nine apples are left over.")
    unfenced = rec("def solution():\n    total = 48 / 2\n    return total + 48\n")
    stage.apply([bare, german_with_code, english_with_code, unfenced])
    assert bare["accepted"] and detail(bare)["skipped"] == "too_little_prose"
    assert unfenced["accepted"] and detail(unfenced)["skipped"] == "too_little_prose"
    assert german_with_code["reject_reason"].startswith("wrong_language: de")
    assert english_with_code["accepted"] and detail(english_with_code)["language"] == "en"
    assert "def" not in prose_only(english_with_code["response"])
    assert prose_only("Natalia sold <<48/2=24>>24 clips.\n#### 72") == "Natalia sold 24 clips."
    # code: include looks at everything: the bare program is judged, not skipped
    included = rec(program)
    LanguageFilter(LanguageConfig(code="include")).apply([included])
    assert "skipped" not in detail(included)


def test_undetermined_text_passes_or_is_rejected_on_request():
    cyrillic = "Привет, как дела сегодня, мои дорогие друзья?"
    passing = LanguageFilter(LanguageConfig(candidates=["de"]))
    strict = LanguageFilter(LanguageConfig(candidates=["de"], on_undetermined="reject"))
    a, b = rec(cyrillic), rec(cyrillic)
    passing.apply([a])
    strict.apply([b])
    assert a["accepted"] and detail(a)["skipped"] == "undetermined"
    assert b["reject_reason"] == f"undetermined_language: no language found in {letter_count(cyrillic)} letters of prose"


def test_fields_and_seed_fields():
    stage = LanguageFilter(LanguageConfig(fields=["prompt", "seed.title"]))
    assert {f for f in stage.config.inputs if f.startswith("seed.")} == {"seed.title"}
    record = rec("Die Antwort ist zwölf.", question="How many apples are left in the basket after lunch?",
                 title="Counting the apples that are left")
    stage.apply([record])
    assert record["accepted"] and detail(record)["language"] == "en"  # the German response is not looked at


def test_config_rejects_unknown_codes():
    with pytest.raises(ValueError, match="unknown ISO 639-1 language code 'xx'"):
        LanguageConfig(languages=["xx"])
    assert LanguageConfig(candidates="all").candidates == "all"


def test_speed_on_gsm8k_answers():
    answers = [r["answer"] for r in read_jsonl(GSM8K_TEST, 500)]
    stage = LanguageFilter(LanguageConfig())
    stage.apply([rec(a) for a in answers[:20]])  # load the language models
    records = [rec(a) for a in answers]
    start = time.perf_counter()
    kept = stage.apply(records)
    rate = len(records) / (time.perf_counter() - start)
    print(f"language filter: {rate:.0f} texts/s over {len(records)} GSM8K answers")
    assert rate > 50 and len(kept) >= 0.95 * len(records)
