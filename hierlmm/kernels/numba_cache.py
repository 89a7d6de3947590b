"""The cache key of hierlmm's Numba-backed PyTensor Ops.

PyTensor's on-disk Numba cache keys a compiled Op by its class, its ``__props__`` and the version number its
dispatch function returns. A fixed version would serve an edited kernel stale from the cache (seen while developing
:mod:`hierlmm.kernels.woodbury_op`: a deliberately broken kernel still passed its gradient test), so every Op returns
the checksum of its own source file, and of the kernels' shared helpers (:mod:`hierlmm.kernels.small_linalg`), instead.
"""

from __future__ import annotations

import zlib
from pathlib import Path


def source_version(module_file: str) -> int:
    """CRC-32 of a module's source file (pass ``__file__``) and of :mod:`hierlmm.kernels.small_linalg`, which the
    kernels
    call: changes whenever either source does."""
    helpers = Path(__file__).with_name("small_linalg.py")
    return zlib.crc32(helpers.read_bytes(), zlib.crc32(Path(module_file).read_bytes()))
