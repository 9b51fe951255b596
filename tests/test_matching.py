"""AP and IoU matching against hand-built label pairs."""

import numpy as np
import pytest

from spotlight_scale.core.matching import average_precision, iou_matrix, match_labels


def test_hand_built_pairs():
    gt = np.zeros((1, 10, 40), int)
    pred = np.zeros_like(gt)
    gt[0, :, 0:10] = 1          # 100 voxels
    pred[0, :, 0:10] = 7        # IoU 1.0 with 1
    gt[0, :, 12:22] = 2         # 100 voxels
    pred[0, :, 14:22] = 8       # 80 voxels inside: IoU 0.8 with 2
    gt[0, :, 24:34] = 3         # 100 voxels, missed (FN)
    pred[0, :, 36:40] = 9       # false positive (FP)
    gids, pids, iou = iou_matrix(gt, pred)
    assert gids.tolist() == [1, 2, 3] and pids.tolist() == [7, 8, 9]
    assert iou[0, 0] == 1.0 and iou[1, 1] == pytest.approx(0.8) and iou[2].sum() == 0
    ap = average_precision(gt, pred, [0.5, 0.75, 0.85])
    # t=0.5, 0.75: TP=2, FP=1, FN=1 -> 2/4; t=0.85: TP=1, FP=2, FN=2 -> 1/5
    np.testing.assert_allclose(ap, [0.5, 0.5, 0.2])
    a, b = match_labels(gt, pred, 0.5)
    assert sorted(zip(a.tolist(), b.tolist())) == [(1, 7), (2, 8)]


def test_one_to_one_and_empty():
    gt = np.zeros((4, 4), int)
    gt[:, :2], gt[:, 2:] = 1, 2
    pred = np.ones((4, 4), int)  # one object covering both: IoU 0.5 with each
    assert average_precision(gt, pred, [0.5]).tolist() == [0.5]  # TP 1, FP 0, FN 1
    empty = np.zeros((4, 4), int)
    assert average_precision(empty, empty, [0.5]).tolist() == [1.0]
    assert average_precision(gt, empty, [0.5]).tolist() == [0.0]
    with pytest.raises(ValueError, match="shape"):
        average_precision(gt, np.zeros((3, 4), int))
