"""segnet's napari plugin: a dock widget that segments, counts and measures, and a reader of ``segnet predict`` outputs.

The manifest ``napari.yaml`` (npe2) names the widget (:mod:`segnet.napari.widget`) and the reader
(:mod:`segnet.napari.reader`); napari imports them only when they are used, so nothing heavy loads
at napari start-up, and torch only on the first Segment with a PyTorch model.
"""
