"""The one registry: lookups, errors, import-order independence, and a third-party plugin
installed as a distribution (found through its ``entry_points.txt``) whose filter and
generation strategy a recipe uses through the CLI.

The plugin's strategy calls a real local HTTP server that replays hand-written responses
(``tests/fault_server.py``): the outputs of a capable model, which cannot run here."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Literal

import pyarrow.parquet as pq
import pytest

from distillery import registry
from distillery.errors import RecipeError
from distillery.pipeline.config import StageConfig
from distillery.pipeline.stage import Check, Stage
from distillery.recipe import Recipe
from tests.fault_server import FaultServer
from tests.helpers import run_cli

PLUGIN = '''
"""A distillery plugin: a strategy that drafts then revises, and a filter on the draft."""
from typing import Any, Literal

import pyarrow as pa

from distillery.backends.base import GenerationRequest
from distillery.generate.strategy import Strategy, StrategyConfig
from distillery.pipeline.config import StageConfig
from distillery.pipeline.stage import Check, Stage
from distillery.registry import register


@register("strategy")
class DraftReviseConfig(StrategyConfig):
    strategy: Literal["draft_revise"] = "draft_revise"
    instruction: str = "Revise your answer."

    def build(self, recipe):
        return DraftRevise(self, recipe)


class DraftRevise(Strategy):
    outputs = {"draft_words": pa.int64()}

    async def generate(self, seeds, ctx):
        items, records = ctx.prompts(seeds)
        drafts = [GenerationRequest.make(i.messages, ctx.sampling, 0, step="draft") for i in items]
        first = await ctx.generate(drafts)
        revise, owners = [], []
        for item, request, result in zip(items, drafts, first):
            if not ctx.keep(result):
                continue
            messages = [*item.messages, {"role": "assistant", "content": result.text},
                        {"role": "user", "content": self.config.instruction}]
            revise.append(GenerationRequest.make(messages, ctx.sampling, 0))
            owners.append((item, request, result))
        for (item, request, result), final in zip(owners, await ctx.generate(revise)):
            if ctx.keep(final):
                records.append(ctx.candidate(item, final, 0, steps=[ctx.step("draft", request, result)],
                                             draft_words=len((result.text or "").split())))
        return records


@register("filter")
class DraftWordsConfig(StageConfig):
    type: Literal["draft_words"] = "draft_words"
    max_words: int = 5

    @property
    def inputs(self):
        return ("draft_words",)

    def build(self, ctx):
        return DraftWords(self)


class DraftWords(Stage):
    kind = "filter"

    def __init__(self, config):
        super().__init__(config.stage_name)
        self.max_words = config.max_words

    def check(self, record: dict[str, Any]) -> Check:
        n = record["draft_words"]
        return Check(n <= self.max_words, f"long_draft: {n} > {self.max_words} words")
'''


def make_plugin(site: Path) -> Path:
    """A plugin distribution ``distillery-draft`` installed into ``site`` (a folder on sys.path)."""
    site.mkdir(parents=True)
    (site / "distillery_draft.py").write_text(PLUGIN)
    info = site / "distillery_draft-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: distillery-draft\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[distillery.plugins]\ndraft = distillery_draft\n")
    return site


def answer(n: int, body: dict) -> tuple[str, str]:
    """Drafts of questions 'q0', 'q2', ... are short; of odd ones long; revisions say 'final'."""
    question = body["messages"][0]["content"]
    if body["messages"][-1]["content"].startswith("Revise"):
        return "ok", f"final answer to {question}"
    words = 3 if int(question[1:]) % 2 == 0 else 9
    return "ok", " ".join(["draft"] * words)


def test_plugin_filter_and_strategy_through_the_cli(tmp_path: Path):
    site = make_plugin(tmp_path / "site")
    server = FaultServer(answer)
    try:
        seeds = tmp_path / "seeds.jsonl"
        seeds.write_text("".join(json.dumps({"id": f"s{i}", "question": f"q{i}"}) + "\n" for i in range(6)))
        recipe = {
            "seeds": {"path": str(seeds)},
            "teacher": {"model": server.model, "base_url": server.base_url, "concurrency": 2},
            "generation": {"strategy": "draft_revise"},
            "filters": [{"type": "draft_words", "max_words": 5}],
            "output": {"dir": str(tmp_path / "run"), "batch_size": 4},
            "report": {"embedding_model": None},
        }
        path = tmp_path / "recipe.yaml"
        path.write_text(json.dumps(recipe))
        env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
        done = run_cli("run", str(path), "--no-progress", env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        assert server.requests == 12  # a draft and a revision per seed
        accepted = pq.read_table(tmp_path / "run" / "accepted.parquet").to_pylist()
        rejected = pq.read_table(tmp_path / "run" / "rejected.parquet").to_pylist()
        assert sorted(r["id"] for r in accepted) == ["s0#0", "s2#0", "s4#0"]
        assert sorted(r["id"] for r in rejected) == ["s1#0", "s3#0", "s5#0"]
        assert {r["reject_reason"] for r in rejected} == {"long_draft: 9 > 5 words"}
        first = next(r for r in accepted if r["id"] == "s0#0")
        assert first["strategy"] == "draft_revise" and json.loads(first["strategy_params"]) == {
            "instruction": "Revise your answer."}
        assert first["response"] == "final answer to q0" and first["draft_words"] == 3
        (step,) = first["steps"]
        assert step["name"] == "draft" and step["response"] == "draft draft draft"
        assert step["prompt"] == [{"role": "user", "content": "q0"}] and step["tokens_out"] == 7
        assert first["messages"][-1] == {"role": "assistant", "content": "final answer to q0"}
        assert [v["name"] for v in first["verdicts"]] == ["draft_words"]
        # every call of every step is cached under its own key: a fresh re-run makes none
        again = run_cli("run", str(path), "--no-progress", "--fresh", env=env)
        assert again.returncode == 0, again.stderr[-3000:]
        assert server.requests == 12
        report = json.loads((tmp_path / "run" / "report.json").read_text())
        assert report["cache"]["backend_calls"] == 0 and report["cache"]["hits"] == 12
        assert report["strategy"] == "draft_revise"

        # the plugin filter reads a field only its strategy makes: with rejection sampling the
        # recipe fails before any work, naming the field
        recipe["generation"] = {"strategy": "rejection_sampling"}
        recipe["output"]["dir"] = str(tmp_path / "other")
        path.write_text(json.dumps(recipe))
        wrong = run_cli("run", str(path), "--no-progress", env=env)
        assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
        assert "reads the record field 'draft_words', which strategy 'rejection_sampling' does not make" in wrong.stderr
        assert server.requests == 12 and not (tmp_path / "other" / "shards").exists()
    finally:
        server.close()


class _Shout(Stage):
    kind = "filter"

    def check(self, record):
        return Check((record.get("response") or "").isupper(), "not_shouting: lower-case letters")


def test_registered_after_the_recipe_module_was_imported():
    """A filter defined in a notebook after `distillery.recipe` is imported is usable at once."""

    @registry.register("filter")
    class ShoutConfig(StageConfig):
        type: Literal["shout_test"] = "shout_test"

        def build(self, ctx):
            return _Shout(self.stage_name)

    try:
        recipe = Recipe.from_dict({"seeds": {"path": "builtin:arith"}, "teacher": {"model": "m"},
                                   "filters": [{"type": "shout_test"}]})
        assert type(recipe.filters[0]) is ShoutConfig and recipe.filters[0].stage_name == "shout_test"
        assert recipe.model_dump(mode="json")["filters"] == [{"name": None, "type": "shout_test"}]

        # defined again (a re-run notebook cell): replaces the entry, no error
        @registry.register("filter")
        class ShoutConfig(StageConfig):  # noqa: F811
            type: Literal["shout_test"] = "shout_test"

        assert registry.get("filter", "shout_test") is ShoutConfig
    finally:
        registry.remove("filter", "shout_test")
    with pytest.raises(RecipeError, match=r"filters\.0: unknown type 'shout_test'"):
        Recipe.from_dict({"seeds": {"path": "builtin:arith"}, "teacher": {"model": "m"},
                          "filters": [{"type": "shout_test"}]})


def test_unknown_names_say_what_is_registered():
    with pytest.raises(registry.UnknownName, match=r"unknown verifier 'math_answr' \(did you mean 'math_answer'\?\)"):
        registry.get("verifier", "math_answr")
    with pytest.raises(RecipeError, match=r"verifiers\.0: unknown type 'math_answr' \(did you mean 'math_answer'\?\)"):
        Recipe.from_dict({"seeds": {"path": "builtin:arith"}, "teacher": {"model": "m"},
                          "verifiers": [{"type": "math_answr"}]})
    with pytest.raises(RecipeError, match=r"verifiers\.0\.refrence: unknown key \(did you mean 'reference'\?\)"):
        Recipe.from_dict({"seeds": {"path": "builtin:arith"}, "teacher": {"model": "m"},
                          "verifiers": [{"type": "math_answer", "refrence": "x"}]})
    with pytest.raises(RecipeError, match=r"generation: unknown strategy 'magpei'"):
        Recipe.from_dict({"seeds": {"path": "builtin:arith"}, "teacher": {"model": "m"},
                          "generation": {"strategy": "magpei"}})
    with pytest.raises(RecipeError, match=r"teacher\.backend: .*unknown backend 'opneai' \(did you mean 'openai'\?\)"):
        Recipe.from_dict({"seeds": {"path": "builtin:arith"}, "teacher": {"model": "m", "backend": "opneai"}})
    with pytest.raises(RecipeError, match=r"executor: unknown type 'slurm'"):
        Recipe.from_dict({"seeds": {"path": "builtin:arith"}, "teacher": {"model": "m"}, "executor": "slurm"})


def test_a_name_is_taken_once():
    def loader():
        return []

    registry.add("benchmark", "taken_test", loader)
    try:
        registry.add("benchmark", "taken_test", loader)  # the same object again: fine
        with pytest.raises(ValueError, match="already registered"):
            registry.add("benchmark", "taken_test", lambda: [])
        with pytest.raises(ValueError, match="unknown registry kind"):
            registry.add("filters", "x", loader)
    finally:
        registry.remove("benchmark", "taken_test")
    assert "taken_test" not in registry.names("benchmark")


def test_every_kind_has_its_built_ins():
    expected = {
        "verifier": {"math_answer", "python_program", "judge", "self_consistency"},
        "filter": {"length", "repetition", "language", "perplexity", "difficulty"},
        "dedup": {"exact", "minhash", "semantic"},
        "decontamination": {"ngram", "substring"},
        "strategy": {"rejection_sampling", "curate"},
        "executor": {"local", "ray"},
        "backend": {"openai", "transformers"},
        "seed_format": {"jsonl", "parquet", "csv", "hf", "hub", "builtin"},
        "seed_source": {"arith"},
        "benchmark": {"gsm8k_test", "math500", "humaneval", "arith_test"},
        "experiment": {"filter-lift", "collapse", "star"},
        "training_method": {"sft", "kd", "dpo"},
    }
    for kind, names in expected.items():
        assert names <= set(registry.names(kind)), kind
    assert len(registry.names("arith_template")) == 86


def test_a_broken_plugin_is_named(tmp_path: Path):
    site = tmp_path / "site"
    (site / "broken_plugin.py").parent.mkdir(parents=True)
    (site / "broken_plugin.py").write_text("raise ImportError('needs libfoo')\n")
    info = site / "broken_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[distillery.plugins]\nbroken = broken_plugin\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(textwrap.dedent("""\
        seeds: {path: builtin:arith}
        teacher: {model: m}
    """))
    done = run_cli("run", str(recipe), "--no-progress", env={"PYTHONPATH": str(site)})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "plugin 'broken' (broken_plugin, entry point group distillery.plugins) failed to load" in done.stderr
    assert "needs libfoo" in done.stderr
