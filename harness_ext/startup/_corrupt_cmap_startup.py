"""Imported at every interpreter start-up by ``corrupt_cmap_autoload.pth``.

Both files are copied to the root of site-packages (hatchling ``force-include``), so this module
imports even when an editable install's checkout has moved; it must stay silent then, because
an exception from a ``.pth`` import prints a traceback in every Python process.
"""

try:
    from harness_ext._autoload import install
except Exception:  # noqa: BLE001, S110 - package gone or broken: lm-eval runs without the plugin
    pass
else:
    install()
