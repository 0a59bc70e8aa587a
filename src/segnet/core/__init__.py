"""The base every stage stands on; it imports no other part of segnet.

``errors`` (the exception types and their one-line messages), ``outputs`` (atomic writes, refusals to
overwrite an input, output locks), ``readback`` (bounded, checked reads of JSON, CSV and text),
``runfiles`` (the names of every file a run or prediction folder holds), ``distributed`` (devices,
processes under torchrun, the compute dtype) and ``hardware`` (the line that names the hardware).
"""
