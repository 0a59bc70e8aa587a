"""Stage 5, evaluate: predictions scored against the drawn masks.

``run`` (:func:`evaluate_run`: a checkpoint over its held-out images), ``score`` (``segnet score``:
prediction files against truth files; pixels, boundaries, objects, counts, presence), ``metrics``
(what ``metrics.json`` holds, one typed object, written and read back there), ``detection``
(object matching, the one rule for found and missed), ``counting`` and ``measure`` (objects from a
mask and their measurements, which prediction writes too), ``columns`` (table column names) and
``tables`` (score tables as text).
May import: ``segnet.train`` (metrics), ``segnet.model`` and below.
"""
