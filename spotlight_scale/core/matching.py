"""Matching of label images by IoU, and average precision (cellpose/stardist convention).

Objects of two label images are paired one-to-one to maximise the number of
pairs with IoU >= t (Hungarian assignment on the IoU matrix restricted to
pairs above t; for t >= 0.5 a pair above t is necessarily unique, so this is
the same as greedy matching there). Then, at each threshold t,

    AP(t) = TP / (TP + FP + FN)

with TP the matched pairs, FP the unmatched predicted objects and FN the
unmatched ground-truth objects. Two empty images give AP = 1 (nothing to find,
nothing found); one empty image gives AP = 0.

The IoU matrix comes from one pass over the voxels (a sparse contingency
table of label pairs), not from a loop over objects.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

DEFAULT_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.96, 0.05), 2))


def iou_matrix(gt: np.ndarray, pred: np.ndarray):
    """IoU of every overlapping pair of objects.

    Returns
    -------
    gt_ids, pred_ids : ndarray
        Object ids (rows, columns of the matrix), excluding background 0.
    iou : ndarray (len(gt_ids), len(pred_ids))
    """
    if gt.shape != pred.shape:
        raise ValueError(f"label images differ in shape: {gt.shape} vs {pred.shape}")
    g = gt.ravel().astype(np.int64)
    p = pred.ravel().astype(np.int64)
    gt_ids, g_idx = np.unique(g, return_inverse=True)
    pr_ids, p_idx = np.unique(p, return_inverse=True)
    inter = np.bincount(g_idx * len(pr_ids) + p_idx,
                        minlength=len(gt_ids) * len(pr_ids)).reshape(len(gt_ids), len(pr_ids))
    area_g = inter.sum(1)
    area_p = inter.sum(0)
    union = area_g[:, None] + area_p[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    keep_g = gt_ids != 0
    keep_p = pr_ids != 0
    return gt_ids[keep_g], pr_ids[keep_p], iou[np.ix_(keep_g, keep_p)]


def _match_at(iou: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    from scipy.optimize import linear_sum_assignment

    if iou.size == 0:
        return np.zeros(0, int), np.zeros(0, int)
    ok = iou >= t
    # maximise the number of pairs above t, then their total IoU
    cost = -(ok.astype(np.float64) * (1.0 + iou))
    rows, cols = linear_sum_assignment(cost)
    sel = ok[rows, cols]
    return rows[sel], cols[sel]


def match_labels(a: np.ndarray, b: np.ndarray, iou: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matched object ids ``(ids_in_a, ids_in_b)`` with IoU >= ``iou``."""
    ga, pb, m = iou_matrix(a, b)
    r, c = _match_at(m, iou)
    return ga[r], pb[c]


def average_precision(gt: np.ndarray, pred: np.ndarray,
                      thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> np.ndarray:
    """AP = TP / (TP + FP + FN) at each IoU threshold (see module docstring)."""
    gids, pids, m = iou_matrix(gt, pred)
    out = []
    for t in thresholds:
        if len(gids) == 0 and len(pids) == 0:
            out.append(1.0)
            continue
        tp = len(_match_at(m, float(t))[0])
        fp, fn = len(pids) - tp, len(gids) - tp
        out.append(tp / (tp + fp + fn))
    return np.asarray(out, dtype=np.float64)
