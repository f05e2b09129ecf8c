"""Targeted repair: from where the corruption was located to repairing it there, measured
against controls of the same size.

The package in the order it runs:

- ``config``: the study config's ``repair:`` section (``RepairSpec``, ``SelectBlock``);
- ``select``: rank components by the sweep's flip rates or by attribution, take the top k and
  the controls (random draws, the lowest ranked), and write down why (``selection-<label>.json``);
- ``variants``: what will be scored (baselines, each repaired model and its controls) and on
  which items (those no ranking read);
- ``run``: score them through the one runner (``leaderboard.runner``): clean weights put back
  (``restore``) or retrained on correct labels (``retrain``);
- ``measures`` and ``record``: recovery with bootstrap intervals, collateral changes,
  contrasts of located against controls (``repair.json``);
- ``report`` and ``summary``: the tables, the plot and the summary's sentences;
- ``dryrun``: the plan checked offline.

The weight operation itself (naming a component, slicing its parameters, putting clean values
back) is ``patching.components``, which the fine-tuning code uses too.
"""
