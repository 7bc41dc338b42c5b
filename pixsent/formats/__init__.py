"""Pure file I/O for Caffe-era artefacts: prototxt, caffemodel, blobs, means, solverstates, Datums, LMDBs.

Everything here depends only on ``pixsent.caffe.proto``; submodules are imported on demand so that
``import pixsent.formats`` stays cheap.
"""

from __future__ import annotations

__all__ = [
    "atomic",
    "binaryproto",
    "blob",
    "caffemodel",
    "datum",
    "lmdb_io",
    "prototxt",
    "solverstate",
    "upgrade",
]
