"""The dataset trains as it is: ``accepted.parquet`` loaded with ``datasets`` goes straight into
TRL's ``SFTTrainer`` (no ``map``), which finds the prompt-completion columns and puts the loss on
the assistant's tokens only. Real TRL training of the built-in student for a few steps."""

from __future__ import annotations

import math
from pathlib import Path

from distillery.builtin.models import builtin_model_path
from distillery.pipeline.runner import Pipeline
from distillery.recipe import Recipe


def test_sft_trainer_takes_accepted_parquet_as_it_is(tmp_path: Path):
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    recipe = Recipe.from_dict({
        "seeds": {"path": "builtin:arith", "options": {"n": 16, "seed": 1}, "response_field": "program"},
        "prompt": {"system": "Write a Python program.", "template": "{{ question }}"},
        "output": {"dir": str(tmp_path / "run")},
        "report": {"embedding_model": None},
    })
    Pipeline(recipe, progress=False).run()
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "run" / "accepted.parquet"), split="train",
                               cache_dir=str(tmp_path / "hf"))
    row = ds[0]
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    assert row["messages"] == row["prompt"] + row["completion"]
    assert row["completion"] == [{"role": "assistant", "content": row["response"]}]

    path = builtin_model_path("student")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    args = SFTConfig(output_dir=str(tmp_path / "out"), max_steps=3, per_device_train_batch_size=4, learning_rate=1e-3,
                     logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, dataloader_num_workers=0,
                     max_length=512)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer)
    example = trainer.train_dataset[0]
    ids, labels = example["input_ids"], example["labels"]
    assert len(ids) == len(labels) and 0 < sum(label != -100 for label in labels) < len(ids)
    trained = tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label != -100])
    assert row["response"].strip() in trained  # the loss is on the assistant's turn
    assert "Write a Python program." not in trained and row["prompt"][-1]["content"] not in trained
    result = trainer.train()
    assert result.global_step == 3 and math.isfinite(result.training_loss)
