"""Stage 1, data: what the images and masks are.

``pairs`` (finding image/mask pairs, decoding camera files, the train/validation split), ``classes``
(class names, the part each plays in counting, their colours), ``cleaning`` (a predicted mask made
ready for counting), ``fingerprint`` (sizes, normalisation, class frequencies, object diameters),
``dataset`` (pairs as tensors for training), ``transforms`` (augmentation) and ``synthetic`` (the
demo's and the tests' generated images).
May import: ``segnet.core``.
"""
