"""The SGD step family: one training step written plainly and written for speed.

- :mod:`.generic`: :class:`PlainStep` (the array-API reference), :class:`BufferedStep` and
  :class:`BufferedCount` (preallocated, NumPy or CuPy), :class:`CheckedCount` (a fast scorer
  checked once against a plain one);
- :mod:`.cpu`: the NumPy step tuned for the CPU; :mod:`.pipeline`: its helper thread;
  :mod:`.threaded`: the same step with its element-wise passes split over the cores, for large
  batches; :mod:`.compiled`: the whole step as one call of C built with the package
  (``compiled_step.c``), the default where it was built; :mod:`.tiled`: large batches and their
  scoring compiled, each core its block of rows in one call;
- :mod:`.cuda` and :mod:`.kernels`: the CuPy step, its fused kernels and their self-checks.

Only :mod:`.generic` loads with the package; the others are imported where they are chosen.
"""
from .generic import BufferedCount, BufferedStep, CheckedCount, PlainStep, Rows

__all__ = ["BufferedCount", "BufferedStep", "CheckedCount", "PlainStep", "Rows"]
