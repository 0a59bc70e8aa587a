"""Stage 3, model: what a network is, how it learns, how it is stored, and how it is run over an image.

- ``networks``: the SegNet variants and the U-Net, built from a :class:`~segnet.plan.spec.ModelSpec`
  (``build_model``, ``register_model``); ``losses``: the training objective;
- ``checkpoint``: the one checkpoint format (read, written, checked); ``builtin``: the models shipped
  with the package, by name;
- running a model: ``options`` (:class:`InferenceOptions`, defined once, torch-free so the CLI builds
  its flags without torch), ``windows`` (sliding windows with Gaussian weights, as in nnU-Net, and the
  8 dihedral test-time views), ``backends`` (PyTorch, and onnxruntime for exported files: the ONNX
  path never imports torch), ``scale`` (rescaling an image to the model's red-cell size) and
  ``predictor`` (:class:`Predictor`, and :class:`Ensemble` of several: softmax averaged).

Training validates and calibrates with the same :class:`Predictor` that ``segnet predict`` and
``segnet evaluate`` use, which is why running a model sits here, below ``segnet.train``.
May import: ``segnet.plan``, ``segnet.data``, ``segnet.core``.
"""
