"""Stage 8, export: a checkpoint as files for other tools.

``formats`` (ONNX with its metadata, bioimage.io packages) and ``pack`` (a finished run as a
shippable built-in model).
May import: ``segnet.report`` and below; not ``segnet.workflow``.
"""
