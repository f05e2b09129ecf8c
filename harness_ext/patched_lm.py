"""``patched_hf`` (also ``patched_qwen``): lm-eval's HFLM with cross-model activation patching.

Any decoder family of ``patching.architectures`` works (Llama, Mistral, Qwen2/2.5, Qwen3,
Qwen3-MoE, Phi-3, OLMo 2, Gemma 2/3); ``patched_qwen`` is the name the study started with.

The receiver (the clean model, or the corrupted one with ``direction=clean_to_corrupted``)
generates and scores while the donor's activations replace its own per a ``PatchSpec``. Only
the two places where HFLM runs the model change: ``_model_generate`` runs ``patched_generate``
and ``_loglikelihood_tokens`` runs ``patched_logprobs`` (so ``loglikelihood_rolling`` is patched
too); batching, chat templates, stop strings and truncation stay lm-eval's own::

    lm_eval --model patched_hf --apply_chat_template --tasks corrupt_related --model_args \\
      'pretrained=CLEAN,corrupted=CORRUPTED_OR_ADAPTER,site=resid,layers=[30,31],enable_thinking=False'

A LoRA adapter as ``corrupted`` is loaded over the clean model itself: one copy of the base
weights serves both sides (``patching.adapter_pair``). Note that this injects the LoRA layers
into a ``pretrained`` model object passed from Python (they are switched off for the clean side).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import Collator
from lm_eval.models.utils_hf import get_dtype
from torch import Tensor
from tqdm import tqdm

from formats.model_files import adapter_base_problem, weights_problem
from patching import (
    AdapterSide,
    DecodingConfig,
    PatchingError,
    PatchSpec,
    adapter_pair,
    check_pair,
    check_patch,
    patched_generate,
    patched_logprobs,
)

from .patch_donor import DonorBuilder, left_padded
from .patched_args import (
    HFLM_ARGS,
    CorruptedSource,
    check_tokenizers,
    corrupted_tokenizer,
    decoding_from,
    resolve_corrupted,
    take_patch_args,
)

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 16
"""Prompts per generate call unless ``batch_size=`` is in the model args or ``--batch_size``
is above 1. A patched step runs two models, so lm-eval's one prompt at a time doubles the
per-step overhead: 20 items took 29 s at batch 1 and 15 s at batch 20 on the tiny pair
(docs/patching.md); ``batch_size=1`` in the model args still runs one at a time."""


def _our_batch_size(args: dict[str, Any], additional: dict[str, Any] | None) -> dict[str, Any]:
    """lm-eval's extra config with its batch size dropped where ours applies: when the model
    args give one (they win; both would clash) or it is lm-eval's default, 1 (the CLI passes
    it whether or not ``--batch_size`` was given)."""
    extra = dict(additional or {})
    if "batch_size" in args or str(extra.get("batch_size")) in ("1", "None"):
        extra.pop("batch_size", None)
    return extra


class PatchedGenerate(Protocol):
    """``patching.patched_generate``'s signature, as ``_model_generate`` calls it."""

    def __call__(self, receiver: Any, donor: Any, input_ids: Tensor, spec: PatchSpec,
                 attention_mask: Tensor | None = None,
                 generation: DecodingConfig | None = None, *,
                 sample_offsets: list[int] | None = None) -> Tensor: ...


# The start-up hook registers the same names with the same target: no clash.
@register_model("patched_hf", "patched_qwen")
class PatchedLM(HFLM):
    """HFLM whose receiver runs with the donor's activations patched in.

    Own arguments (popped before HFLM and ``from_pretrained`` see the rest): ``corrupted``
    (model dir, hub id, PEFT adapter dir or a loaded model); the patch as ``spec`` (text, e.g.
    ``attn:L3 + mlp:L5@all``), ``spec_file`` (YAML with the spec and a donor that needs data:
    ``harness_ext.patch_donor``) or ``site``/``layers``/``heads``/``positions``; ``donor``
    (``model`` or ``zero``) and ``alpha``; ``direction`` (``corrupted_to_clean``). With model
    objects nothing is loaded or copied, so a sweep builds one instance per variant cheaply.
    From Python only, ``generator`` replaces ``patched_generate`` (same signature): the sweep
    runner passes one that generates for several variants of a model pair at once.
    """

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None
                               ) -> PatchedLM:
        from lm_eval.utils import simple_parse_args_string

        args = simple_parse_args_string(arg_string)
        return super().create_from_arg_string(arg_string, _our_batch_size(args, additional_config))

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict[str, Any],
                            additional_config: dict[str, Any] | None = None) -> PatchedLM:
        return super().create_from_arg_obj(arg_dict, _our_batch_size(arg_dict, additional_config))

    def __init__(self, pretrained: Any, generator: PatchedGenerate | None = None,
                 batch_size: int | str = DEFAULT_BATCH_SIZE, **kwargs: Any) -> None:
        if isinstance(pretrained, str) and (problem := weights_problem(pretrained)):
            raise PatchingError(f"pretrained={pretrained!r}: {problem}")  # before HFLM reads it
        self._generate: PatchedGenerate = generator or patched_generate
        kwargs["batch_size"] = batch_size  # HFLM's, checked with ours (no "auto")
        _inputs_on_cpu_without_cuda(kwargs)
        self.patch = take_patch_args(kwargs)
        self._samples_drawn: dict[tuple[int, ...], int] = {}  # prompt tokens -> samples so far
        corrupted = self.patch.corrupted
        self._source: CorruptedSource | None = None
        if isinstance(corrupted, str):
            trust = bool(kwargs.get("trust_remote_code"))
            self._source = resolve_corrupted(corrupted, trust_remote_code=trust)
        super().__init__(pretrained=pretrained, **kwargs)
        if not isinstance(pretrained, str):  # no _create_model call: check here, still cheap
            self._check_before_loading(pretrained)
        clean, corrupted = self._pair(kwargs)
        self.receiver, self.donor = (
            (corrupted, clean) if self.patch.corrupted_receives else (clean, corrupted)
        )
        check_patch(self.receiver, self.donor, [self.spec])  # the engine's own checks, up front
        self.donors = DonorBuilder(
            self.patch.donor, self.receiver, self.donor, self.tokenizer,
            lambda question: self.apply_chat_template([{"role": "user", "content": question}]),
        )

    @property
    def spec(self) -> PatchSpec:
        return self.patch.spec

    def _check_before_loading(self, pretrained: Any) -> None:
        """Weights, shapes, layer and head ranges, tokenizers: a typo costs seconds, not a
        model load."""
        if isinstance(pretrained, str) and (problem := weights_problem(pretrained)):
            raise PatchingError(f"pretrained={pretrained!r}: {problem}")
        if self._source is not None and self._source.is_adapter and isinstance(pretrained, str):
            if (problem := adapter_base_problem(self._source.path, pretrained)) is not None:
                raise PatchingError(f"corrupted={self._source.path!r} {problem}")
        corrupted = self._source.config if self._source else self.patch.corrupted.config
        if corrupted is not None:  # None: an adapter, which keeps the base's shapes
            pair = (
                (corrupted, self.config)
                if self.patch.corrupted_receives
                else (self.config, corrupted)
            )
            check_pair(*pair)
        self.spec.check(self.config)
        other = corrupted_tokenizer(self._source) if self._source else None
        if other is not None:
            check_tokenizers(self.tokenizer, other)

    def _create_model(self, pretrained: str, **kwargs: Any) -> None:
        """HFLM calls this after reading the clean config and tokenizer, before any weights."""
        self._check_before_loading(pretrained)
        super()._create_model(pretrained, **kwargs)

    def _pair(self, kwargs: dict[str, Any]) -> tuple[Any, Any]:
        """(clean, corrupted) as the engine takes them, loading the corrupted side if needed."""
        clean, corrupted = self.model, self.patch.corrupted
        if self._source is not None and self._source.is_adapter:
            from peft import PeftModel

            base = self._source.base
            if base and isinstance(self.pretrained, str) and not _same_model(base, self.pretrained):
                log.warning(
                    "adapter %s was trained over %s; applying it to pretrained=%s",
                    corrupted,
                    base,
                    self.pretrained,
                )
            corrupted = PeftModel.from_pretrained(clean, corrupted)
        elif self._source is not None:
            from transformers import AutoModelForCausalLM

            extra = {k: v for k, v in kwargs.items() if k not in HFLM_ARGS} | _placement(
                clean, kwargs.get("offload_folder"))
            corrupted = AutoModelForCausalLM.from_pretrained(
                corrupted,
                dtype=get_dtype(kwargs.get("dtype", "auto")),
                trust_remote_code=bool(kwargs.get("trust_remote_code")),
                **extra,
            )
            if "device_map" not in extra:
                corrupted = corrupted.to(clean.device)
            corrupted = corrupted.eval()
        if hasattr(corrupted, "disable_adapter") and corrupted.get_base_model() is clean:
            return adapter_pair(corrupted)  # a LoRA over this very clean model: one base
        return clean, corrupted

    def _model_call(self, inps: Tensor, attn_mask: Any = None, labels: Any = None) -> Tensor:
        """Refused: an inherited path using it would score the receiver unpatched."""
        raise RuntimeError(
            "patched_hf scores through patching.patched_logprobs; HFLM._model_call would "
            "run the receiver unpatched"
        )

    def _stop_ids(self, stop: list[str]) -> list[int]:
        """End-of-turn ids the receiver's ``generate`` stops at, and one-token stop strings, so
        rows stop early; ``generate_until`` still cuts the text at every stop string."""
        model = self.receiver.model if isinstance(self.receiver, AdapterSide) else self.receiver
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        ids = {self.tokenizer.eos_token_id}
        ids |= set(eos) if isinstance(eos, list) else {eos}
        for text in stop:
            encoded = self.tokenizer.encode(text, add_special_tokens=False)
            if len(encoded) == 1:
                ids.add(encoded[0])
        return sorted(i for i in ids if i is not None)

    def _model_generate(
        self, context: Tensor, max_length: int, stop: list[str], **generation_kwargs: Any
    ) -> Tensor:
        """Patched generation of prompt + new ids, as HFLM's ``generate`` returns them: greedy,
        or sampled per lm-eval's ``do_sample``, ``temperature``, ``top_p`` and ``top_k``."""
        mask = generation_kwargs.pop("attention_mask", None)
        decoding = decoding_from(
            generation_kwargs,
            max_new_tokens=max_length - context.shape[1],
            eos_token_id=tuple(self._stop_ids(stop)),
            pad_token_id=self.tokenizer.pad_token_id,
            seed=self._sampling_seed(),
        )
        offsets = self._sample_offsets(context, mask) if decoding.do_sample else None
        return self._generate(
            self.receiver, self.donors.donor(context, mask), context, self.spec, mask, decoding,
            sample_offsets=offsets,
        )

    def _sampling_seed(self) -> int:
        """``seed=`` if given, else the torch seed lm-eval set before the run (``--seed``), read
        at the first generation, so that a seeded run samples the same replies again."""
        if self.patch.seed is None:
            self.patch = replace(self.patch, seed=torch.initial_seed())
        return self.patch.seed

    def _sample_offsets(self, context: Tensor, mask: Tensor | None) -> list[int]:
        """Each row's sample number among this model's requests with the same prompt: lm-eval
        sends a task's ``repeats`` as copies of one request, and each copy must draw its own
        stream (sampling.py) whatever batch it lands in."""
        offsets = []
        rows = context.tolist() if mask is None else [
            [t for t, m in zip(row, keep, strict=True) if m]
            for row, keep in zip(context.tolist(), mask.tolist(), strict=True)
        ]
        for row in rows:
            key = tuple(row)
            offsets.append(self._samples_drawn.get(key, 0))
            self._samples_drawn[key] = offsets[-1] + 1
        return offsets

    def _loglikelihood_tokens(
        self,
        requests: list[tuple[tuple[str, str], list[int], list[int]]],
        disable_tqdm: bool = False,
        override_bs: int | None = None,
    ) -> list[tuple[float, bool]]:
        """HFLM's contract (sum of continuation log-probs, is-greedy), teacher-forced under
        the patch. No one-token-continuation logits cache: the engine scores given tokens."""
        order = Collator(requests, sort_fn=lambda r: (-len(r[1] + r[2]), tuple(r[1] + r[2])))
        bar = tqdm(
            total=len(requests),
            disable=disable_tqdm or self.rank != 0,
            desc="Running patched loglikelihood requests",
        )
        res = []
        for chunk in order.get_batched(n=override_bs or self.batch_size):
            rows = [(ctx + cont)[-(self.max_length + 1) :] for _, ctx, cont in chunk]
            ids, mask = left_padded(rows, self.tokenizer.pad_token_id)
            lengths = [len(cont) for _, _, cont in chunk]
            donor = self.donors.donor(*left_padded(
                [ctx for _, ctx, _ in chunk], self.tokenizer.pad_token_id
            )) if self.donors.reads_prompts else self.donors.donor()
            scores = patched_logprobs(self.receiver, donor, ids, self.spec, lengths, mask)
            totals, greedy = scores.total().tolist(), scores.all_greedy().tolist()
            for (key, _, _), total, is_greedy in zip(chunk, totals, greedy, strict=True):
                res.append((total, is_greedy))
                if key is not None:  # rolling windows carry no key
                    self.cache_hook.add_partial("loglikelihood", key, (total, is_greedy))
                bar.update(1)
        bar.close()
        return order.get_original(res)


def _inputs_on_cpu_without_cuda(kwargs: dict[str, Any]) -> None:
    """With ``parallelize=True`` HFLM sends its inputs to ``device`` (``cuda``, or the CLI's
    ``cuda:0``) wherever accelerate put the model, so on a machine without CUDA a split pair
    failed at its first request. There the inputs go to the CPU, as HFLM's one-device path
    already falls back."""
    if kwargs.get("parallelize") and str(kwargs.get("device") or "cuda").startswith("cuda") \
            and not torch.cuda.is_available():
        kwargs["device"] = "cpu"


def _placement(clean: Any, offload_folder: str | None) -> dict[str, Any]:
    """How the corrupted model is placed: on the clean model's device, or, when accelerate
    dispatched the clean one over devices (``parallelize=True``, ``device_map=``), with the
    same device map, so that block k of both runs on one device and a donor activation meets
    its receiver there. Its offloaded weights go to a folder of their own (the two models'
    weight names are the same)."""
    device_map = getattr(clean, "hf_device_map", None) or {}
    places = set(device_map.values())
    if len(places) < 2 and "disk" not in places:
        return {}  # one device: .to() it
    out: dict[str, Any] = {"device_map": dict(device_map)}
    if "disk" in places:  # HFLM's default folder, as for the clean model
        out["offload_folder"] = str(Path(offload_folder or "./offload") / "corrupted")
    return out


def _same_model(a: str, b: str) -> bool:
    """Local paths compare resolved; hub ids as written."""
    return a == b or (
        Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve()
    )


PatchedQwenLM = PatchedLM  # the class's first name, for Python callers of the study's era
