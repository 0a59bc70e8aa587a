"""Stage 4, train: the training loop and everything a run folder holds.

``loop`` (:func:`train`: a plain PyTorch loop that runs under torchrun unchanged), ``runfolder`` (the
run folder, its history and the checks before a resume), ``budget`` (the time budget), ``metrics``
(the one confusion matrix every score is computed from: validation, calibration, ``segnet
evaluate``; the typed pixel scores; ``best_metrics.json``), ``calibration`` (logit offsets chosen
on training images after training),
``curves`` (curves.png) and ``folds`` (where a cross-validation run keeps its folds).
May import: ``segnet.model``, ``segnet.plan``, ``segnet.data``, ``segnet.core``.
"""
