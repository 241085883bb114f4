"""Backend that runs a Hugging Face causal LM in-process with batched ``generate``.

Same interface and result fields as the HTTP backend, on CPU or GPU. Requests are grouped
by sampling parameters, sorted by prompt length (less padding), and generated in batches of
``batch_size`` with left padding.

Chat requests are rendered with the model's chat template (``add_generation_prompt``); a raw
text completion (:meth:`~distillery.backends.base.GenerationRequest.raw`, Magpie's pre-query
prefix) is tokenized as it is, without special tokens added (the text already carries the
template's BOS, if it has one), and continued. JSON schemas are not enforced here (no
constrained decoding); strategies parse the text robustly either way.

On the CPU, torch runs ``teacher.threads`` threads (default: the cores this process may use, less
the load other processes put on them: :mod:`distillery.backends.threads`), so a teacher that
shares its cores with other work does not thrash. torch is imported when the model loads, not
when this module is imported.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

from distillery.backends import threads as _threads
from distillery.backends.base import Backend, GenerationRequest, GenerationResult, SamplingParams
from distillery.errors import BackendError
from distillery.registry import register


def pick_device(device: str = "auto") -> str:
    """``"cuda"`` when asked for ``"auto"`` and a GPU is present, else ``"cpu"``; other values pass through."""
    if device != "auto":
        return device
    _threads.prepare_torch_import()
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model_and_tokenizer(model: str, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False):
    """Load a causal LM and its tokenizer from a local folder or a Hub name.

    Returns:
        ``(model, tokenizer)``; the tokenizer pads on the left and has a pad token.

    Raises:
        BackendError: the model cannot be loaded (missing folder, no network for a Hub name).
    """
    _threads.prepare_torch_import()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = pick_device(device)
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
        lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise BackendError(f"teacher: cannot load model {model!r}: {str(e).splitlines()[0]}") from e
    lm.to(device).eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return lm, tokenizer


def _prompt_chars(request: GenerationRequest) -> int:
    """Characters of a request's prompt (raw text, or every message's content): the sort key
    that puts prompts of similar length in one batch."""
    if request.prompt is not None:
        return len(request.prompt)
    return sum(len(c) for _, c in request.messages)


@register("backend", name="transformers")
class TransformersBackend(Backend):
    """A local ``transformers`` model as a teacher.

    Args:
        model: a local folder or Hub name.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        dtype: ``"auto"`` (bf16 on GPUs that support it, else fp32) or a torch dtype name.
        batch_size: requests per ``generate`` call.
        path: where to load the model from when ``model`` is only its name (e.g.
            ``builtin:teacher``, whose name enters records and cache keys, stable across machines).
        threads: torch's CPU threads (``torch.set_num_threads``, a setting of the whole process),
            set when the model loads; ``None``: :func:`distillery.backends.threads.default_threads`,
            from the load read when the backend is built, before its own work starts.

    Attributes:
        threads_used: the thread count set at load (``None`` before :meth:`preflight`).

    Raises:
        ValueError: ``threads`` is below 1.
    """

    kind = "transformers"
    raw_completions = True

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto", batch_size: int = 16,
                 path: str | None = None, threads: int | None = None) -> None:
        super().__init__(model)
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.threads = threads
        self.threads_used: int | None = None
        if threads is None:
            _threads.load_at_start()  # read the others' load now, before our model loads and runs
        self.path = path or model
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self._lm: Any = None
        self._tok: Any = None

    @classmethod
    def from_config(cls, config: Any, base_dir: Any = None) -> TransformersBackend:
        """From a ``teacher:`` section (``device``, ``dtype``, ``batch_size``, ``threads``); ``builtin:``
        names and paths relative to ``base_dir`` resolve to folders, while the recipe's name
        (stable across machines) enters records and cache keys."""
        from distillery.builtin.models import resolve_model

        return cls(config.model, device=config.device, dtype=config.dtype, batch_size=config.batch_size,
                   path=resolve_model(config.model, base_dir), threads=getattr(config, "threads", None))

    async def preflight(self) -> None:
        """Set torch's threads and load the model (once).

        Raises:
            BackendError: the model cannot be loaded or its tokenizer has no chat template.
        """
        if self._lm is None:
            self.threads_used = _threads.apply_torch_threads(self.threads)
            self._lm, self._tok = await asyncio.to_thread(load_model_and_tokenizer, self.path, self.device, self.dtype)
            if not getattr(self._tok, "chat_template", None):
                raise BackendError(f"teacher: the tokenizer of {self.model!r} has no chat template")

    def _generate_batch(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[GenerationResult]:
        import torch

        if self.threads_used is not None and torch.get_num_threads() != self.threads_used:
            torch.set_num_threads(self.threads_used)  # another user of this process changed it
        tok, lm = self._tok, self._lm
        texts = [
            r.prompt if r.prompt is not None
            else tok.apply_chat_template(r.message_dicts(), tokenize=False, add_generation_prompt=True)
            for r in requests
        ]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(lm.device)
        if sampling.seed is not None or sampling.temperature > 0:
            digest = hashlib.sha256("|".join(self.cache_key(r) for r in requests).encode()).digest()
            torch.manual_seed(int.from_bytes(digest[:8], "little") % (2**63))
        kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_tokens, "pad_token_id": tok.pad_token_id}
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if sampling.stop:
            kwargs.update(stop_strings=list(sampling.stop), tokenizer=tok)
        start = time.perf_counter()
        with torch.inference_mode():
            out = lm.generate(**enc, **kwargs)
        elapsed = time.perf_counter() - start
        prompt_len = enc["input_ids"].shape[1]
        eos_ids = lm.generation_config.eos_token_id
        eos = set(eos_ids if isinstance(eos_ids, list) else [eos_ids]) if eos_ids is not None else set()
        eos.add(tok.eos_token_id)
        results = []
        for row in range(len(requests)):
            gen = out[row, prompt_len:].tolist()
            n = len(gen)
            while n and gen[n - 1] == tok.pad_token_id and tok.pad_token_id not in eos:
                n -= 1
            stopped = next((k for k, t in enumerate(gen[:n]) if t in eos), None)
            if stopped is not None:
                n, finish = stopped + 1, "stop"
            else:
                finish = "length" if n >= sampling.max_tokens else "stop"
            text = tok.decode(gen[:n], skip_special_tokens=True)
            if sampling.stop:
                for s in sampling.stop:
                    cut = text.find(s)
                    if cut >= 0:
                        text, finish = text[:cut], "stop"
            tokens_in = int(enc["attention_mask"][row].sum())
            results.append(
                GenerationResult(
                    text=text, finish_reason=finish, tokens_in=tokens_in, tokens_out=n, latency_s=elapsed
                )
            )
        self.stats.calls += len(requests)
        self.stats.tokens_in += sum(r.tokens_in for r in results)
        self.stats.tokens_out += sum(r.tokens_out for r in results)
        return results

    async def stream(self, requests: list[GenerationRequest],
                     on_receive: Callable[[int, GenerationResult], None] | None = None,
                     ) -> AsyncIterator[tuple[int, GenerationResult]]:
        await self.preflight()
        groups: dict[SamplingParams, list[int]] = defaultdict(list)
        for i, r in enumerate(requests):
            groups[r.sampling].append(i)
        for sampling, idx in groups.items():
            idx.sort(key=lambda i: _prompt_chars(requests[i]))
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start : start + self.batch_size]
                try:
                    results = await asyncio.to_thread(self._generate_batch, [requests[i] for i in chunk], sampling)
                except RuntimeError as e:  # e.g. out of memory: transient, retried next run (lower teacher.batch_size)
                    self.stats.failures["exception"] += len(chunk)
                    results = [
                        GenerationResult(text=None, error_kind="exception", error=f"{type(e).__name__}: {e}")
                        for _ in chunk
                    ]
                if on_receive is not None:  # the whole chunk at receipt, before any of it is used
                    for i, result in zip(chunk, results, strict=True):
                        on_receive(i, result)
                for i, result in zip(chunk, results, strict=True):
                    yield i, result

    async def aclose(self) -> None:
        self._lm = None
        self._tok = None
