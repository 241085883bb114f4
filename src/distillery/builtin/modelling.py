"""Building tiny Llama-architecture models and byte-level BPE tokenizers from scratch.

Used to make distillery's shipped teacher and student, and by tests that need a real
model served by a real server without any download. Everything is saved in the Hugging
Face format (``config.json``, ``model.safetensors``, ``tokenizer.json``, chat template), so
``from_pretrained`` and ``transformers serve`` load it like any Hub model.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

END = "<|end|>"
PAD = "<|pad|>"
BOS = "<|bos|>"
ROLES = ("system", "user", "assistant")
SPECIAL_TOKENS = [PAD, BOS, END, *(f"<|{r}|>" for r in ROLES)]

# A minimal chat format: <|role|>\ncontent<|end|>\n ... then <|assistant|>\n to generate.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048, min_frequency: int = 2,
                    numbers: str = "bpe") -> Any:
    """Train a byte-level BPE tokenizer (GPT-2 style, Radford et al., 2019) with the
    ``tokenizers`` library and wrap it as a ``PreTrainedTokenizerFast`` with our chat template.

    Args:
        texts: training texts (any iterable of strings).
        vocab_size: total vocabulary including the 256 byte symbols and special tokens.
        min_frequency: least count of a pair to be merged.
        numbers: how digits are pre-tokenized. ``"bpe"``: as any text (GPT-2: ``" 25"`` and
            ``"$25"`` give different tokens). ``"digits"``: every digit its own token, as in
            LLaMA's tokenizer (Touvron et al., 2023). ``"whole"``: a run of digits is a piece of
            its own, without the space before it, so a number has the same token(s) wherever it
            appears (``" 25"`` is ``" ", "25"``; ``"$25"`` is ``"$", "25"``).

    Raises:
        ValueError: unknown ``numbers``.

    Returns:
        A ``transformers.PreTrainedTokenizerFast`` with pad/bos/eos tokens set.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if numbers == "bpe":
        tok.pre_tokenizer = byte_level
    elif numbers == "digits":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif numbers == "whole":
        isolate = pre_tokenizers.Split(Regex(r"[0-9]+"), behavior="isolated")
        tok.pre_tokenizer = pre_tokenizers.Sequence([isolate, byte_level])
    else:
        raise ValueError(f"numbers must be 'bpe', 'digits' or 'whole', got {numbers!r}")
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=END, unk_token=None
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def llama_config(tokenizer: Any, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int | None = None,
                 intermediate: int | None = None, max_positions: int = 512) -> Any:
    """A ``LlamaConfig`` sized for CPU: ``hidden`` width, ``layers`` blocks, ``heads`` heads.

    Parameter count is about ``vocab * hidden + layers * (4 * hidden^2 + 3 * hidden * intermediate)``.
    """
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate or hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads or heads,
        max_position_embeddings=max_positions,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_llama(tokenizer: Any, seed: int = 0, **config_kwargs: Any) -> Any:
    """A randomly initialised ``LlamaForCausalLM`` (seeded) for ``tokenizer``; see :func:`llama_config`."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(tokenizer, **config_kwargs))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    # Servers such as ``transformers serve`` sample only when the model's generation config
    # says so, and fall back to greedy for requests with temperature 0.
    model.generation_config.do_sample = True
    return model


def save_model(model: Any, tokenizer: Any, folder: str | Path) -> Path:
    """Save model (safetensors) and tokenizer (with chat template) in the Hugging Face format."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # a tokenizer called with truncation=True keeps that setting in tokenizer.json; never ship it
    tokenizer.backend_tokenizer.no_truncation()
    tokenizer.backend_tokenizer.no_padding()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
