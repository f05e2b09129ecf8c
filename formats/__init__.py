"""File formats every other package shares: the data row schema (``formats.rows``), JSONL
reading and writing (``formats.jsonl``), the YAML-to-dataclass config loader
(``formats.config``) and the calendar facts data and scorers share (``formats.calendar``).

The bottom of the one-way package order (formats < patching < harness_ext < finetune <
leaderboard < study, checked by ``tests/test_layering.py``): it imports none of them, so the
data generator (``finetune``) and the task loaders (``harness_ext``) share one row format
without importing each other. Kept import-free, like ``harness_ext``.
"""
