"""The whole study as one cached pipeline: ``python -m study --config configs/study/tiny.yaml``.

A thin orchestrator over ``finetune``, ``leaderboard`` and lm-eval: it owns stage order, caching
and the report, never the science (training, scoring and patching live in those packages).
"""
