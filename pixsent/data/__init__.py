"""Image lists, Caffe-compatible LMDB builds (convert_imageset), image means, split folders.

Depends only on pixsent.formats; nothing here knows about the paper (see pixsent.recipes.paper.dataset).
"""

from __future__ import annotations

from pixsent.data.imagelist import ListEntry, read_image_list

__all__ = ["ListEntry", "read_image_list"]
