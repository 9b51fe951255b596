"""Labels of volumes larger than memory, block by block, stitched across block faces.

Two tools, in the manner of dask-image's ``ndmeasure.label``:

- :func:`label_chunked`: connected components of a mask. Each block is
  labelled alone, ids are offset to be unique, the pairs of labels that touch
  across each block face (face-connectivity) are collected, merged by
  connected components of that pair graph (``scipy.sparse.csgraph``) and
  relabelled 1..N. The result is the same partition as ``scipy.ndimage.label``
  of the whole mask.
- :func:`segment_chunked`: any segmentation function on overlapping blocks.
  Each block keeps the objects whose centroid lies in its core (the block
  without its overlap); objects of neighbouring blocks that overlap by IoU
  >= ``iou`` in the shared region are the same object and are merged. Equal
  to the single-block result when objects are smaller than the overlap.
"""

from __future__ import annotations

from itertools import product
from typing import Callable

import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..core.segment import relabel_sequential


def _blocks(shape, chunks):
    grids = [range(0, n, c) for n, c in zip(shape, chunks)]
    for origin in product(*grids):
        yield tuple(slice(o, min(o + c, n)) for o, c, n in zip(origin, chunks, shape))


def _merge(labels: np.ndarray, pairs: list[np.ndarray]) -> np.ndarray:
    n = int(labels.max()) + 1
    if pairs:
        p = np.concatenate(pairs).reshape(-1, 2)
        graph = coo_matrix((np.ones(len(p)), (p[:, 0], p[:, 1])), shape=(n, n))
    else:
        graph = coo_matrix((n, n))
    _, comp = connected_components(graph, directed=False)
    comp = comp.astype(np.int64) + 1
    comp[0] = 0  # background stays background
    return relabel_sequential(comp[labels])


def label_chunked(mask: np.ndarray, chunks) -> np.ndarray:
    """Connected components (face connectivity) of ``mask`` computed block by block."""
    out = np.zeros(mask.shape, np.int64)
    offset = 0
    for sl in _blocks(mask.shape, chunks):
        lab, n = ndi.label(mask[sl])
        lab[lab > 0] += offset
        out[sl] = lab
        offset += n
    pairs = []
    for axis, c in enumerate(chunks):
        for face in range(c, mask.shape[axis], c):
            a = np.take(out, face - 1, axis=axis)
            b = np.take(out, face, axis=axis)
            both = (a > 0) & (b > 0)
            pairs.append(np.stack([a[both], b[both]], axis=1).ravel())
    return _merge(out, pairs).astype(np.uint32)


def segment_chunked(image: np.ndarray, segment: Callable[[np.ndarray], np.ndarray], chunks,
                    overlap, iou: float = 0.5) -> np.ndarray:
    """Apply ``segment`` to overlapping blocks and stitch the labels (see module docstring)."""
    from ..core.matching import iou_matrix

    out = np.zeros(image.shape, np.int64)
    offset = 0
    placed = []  # (outer slices, relabelled block labels) for overlap matching
    for core in _blocks(image.shape, chunks):
        outer = tuple(slice(max(0, s.start - o), min(n, s.stop + o))
                      for s, o, n in zip(core, overlap, image.shape))
        lab = np.asarray(segment(image[outer])).astype(np.int64)
        ids = np.unique(lab[lab > 0])
        if ids.size == 0:
            continue
        cents = ndi.center_of_mass(np.ones_like(lab), lab, ids)
        keep = [i for i, c in zip(ids, cents)
                if all(s.start - so.start <= ci < s.stop - so.start
                       for ci, s, so in zip(c, core, outer))]
        lab = np.where(np.isin(lab, keep), lab + offset, 0)
        offset = int(lab.max()) if lab.max() > offset else offset
        placed.append((outer, lab))
    # objects written by several blocks: match them in the shared regions
    pairs = []
    for i in range(len(placed)):
        for j in range(i + 1, len(placed)):
            (oa, la), (ob, lb) = placed[i], placed[j]
            inter = tuple(slice(max(a.start, b.start), min(a.stop, b.stop)) for a, b in zip(oa, ob))
            if any(s.stop <= s.start for s in inter):
                continue
            sa = la[tuple(slice(s.start - o.start, s.stop - o.start) for s, o in zip(inter, oa))]
            sb = lb[tuple(slice(s.start - o.start, s.stop - o.start) for s, o in zip(inter, ob))]
            ga, gb, m = iou_matrix(sa, sb)
            r, c = np.nonzero(m >= iou)
            if r.size:
                pairs.append(np.stack([ga[r], gb[c]], axis=1).ravel())
    for outer, lab in placed:
        view = out[outer]
        view[lab > 0] = lab[lab > 0]
    return _merge(out, pairs).astype(np.uint32)
