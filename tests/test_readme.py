"""The README's "Extending distillery" examples run as printed: the filter, the verifier and the
generation strategy are executed from the README's own code blocks, registered, and used by a
recipe. The teacher is a real local HTTP server replaying hand-written answers
(``tests/fault_server.py``)."""

from __future__ import annotations

import re
import sys
import types

import pyarrow.parquet as pq

from distillery import registry
from distillery.pipeline.runner import Pipeline
from distillery.recipe import Recipe
from tests.fault_server import FaultServer
from tests.helpers import REPO


def _extending_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Extending distillery", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_readme_extension_examples_run(tmp_path):
    blocks = _extending_blocks()
    assert len(blocks) == 3
    module = types.ModuleType("readme_examples")  # as a notebook's __main__ would hold them
    sys.modules[module.__name__] = module
    for block in blocks:
        exec(compile(block, "README.md", "exec"), module.__dict__)  # noqa: S102 - our own README
    try:
        def answer(n, body):
            last = body["messages"][-1]["content"]
            if last.startswith("Check your answer"):
                question = body["messages"][0]["content"]
                return "ok", {"q0": "4", "q1": "see http://x", "q2": "5"}[question]
            return "ok", "draft"

        server = FaultServer(answer)
        try:
            seeds = tmp_path / "s.jsonl"
            answers = ["4", "see http://x", "4"]  # s1 is right but links out; s2 is wrong
            seeds.write_text("".join(f'{{"id": "s{i}", "question": "q{i}", "answer": "{a}"}}\n' for i, a in enumerate(answers)))
            recipe = Recipe.from_dict({
                "seeds": {"path": str(seeds)},
                "teacher": {"model": server.model, "base_url": server.base_url},
                "generation": {"strategy": "draft_revise"},
                "verifiers": [{"type": "exact_answer"}],
                "filters": [{"type": "no_url"}],
                "output": {"dir": str(tmp_path / "run")},
                "report": {"embedding_model": None},
            })
            Pipeline(recipe, progress=False).run()
        finally:
            server.close()
        accepted = pq.read_table(tmp_path / "run" / "accepted.parquet").to_pylist()
        rejected = {r["id"]: r["reject_reason"] for r in pq.read_table(tmp_path / "run" / "rejected.parquet").to_pylist()}
        assert [r["id"] for r in accepted] == ["s0#0"] and accepted[0]["steps"][0]["name"] == "draft"
        assert rejected == {"s1#0": "has_url: the response links out", "s2#0": "wrong_answer: not the reference"}
    finally:
        registry.remove("filter", "no_url")
        registry.remove("verifier", "exact_answer")
        registry.remove("strategy", "draft_revise")
        sys.modules.pop(module.__name__, None)
