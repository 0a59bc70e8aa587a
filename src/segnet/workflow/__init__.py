"""Workflows over several stages: ``crossval`` (train K folds, score them, pool) and ``demo``.

May import: ``segnet.report`` and below; not ``segnet.export``.
"""
