"""Stage 7, report: a run's self-contained HTML page (``page``: curves, scores, confusion, gallery).

May import: ``segnet.predict``, ``segnet.evaluate`` and below.
"""
