"""A pinned local LLM judge for open-ended replies (the emergent-misalignment protocol).

The judge reads a 0-100 score as the exact expectation over every complete number reply
(``answers``, ``score``), from a local model (``hf``, ``vllm_backend``), with versioned prompts
(``prompts``), a crash-safe cache (``cache``) and provenance on every output. It runs as a
separate step over lm-eval's samples (``python -m harness_ext.judge``) or inside an lm-eval task
(``task``).
"""
