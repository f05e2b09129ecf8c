"""lm-eval glue: start-up hook, ``patched_qwen`` model, scorers and task data loaders.

Kept import-free: the start-up hook imports this package in every Python process.
"""
