"""Stage 2, plan: what the user asked for and what the data decide, before any model exists.

``config`` (:class:`TrainConfig`, the user's options, their choices and bounds), ``spec`` (the model
spec a plan names, as nnU-Net's plans name the architecture), ``weights`` (class weights from class
frequencies), ``check`` (``segnet check``: the dataset's problems and statistics) and ``plan``
(:class:`TrainPlan`: the values a run takes from its fingerprint; every later stage reads the plan)
and ``retired`` (the options segnet no longer has, and how the files that name them are read).
May import: ``segnet.data``, ``segnet.core``.
"""
