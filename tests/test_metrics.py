"""Official FMF metrics against hand-computed confusion matrices, eagerly and under jit."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fmjax.analysis import metrics

# Ten clips, class 1 = abnormal = positive. By hand:
#   index     0 1 2 3 4 5 6 7 8 9
#   label     1 1 1 1 0 0 0 0 0 0
#   predicted 1 1 1 0 1 1 0 0 0 0
#   outcome   TP TP TP FN FP FP TN TN TN TN  ->  TP=3, FN=1, FP=2, TN=4
LABELS = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
PREDICTED = np.array([1, 1, 1, 0, 1, 1, 0, 0, 0, 0])
HAND = np.array([[4, 2],   # label 0: TN, FP
                 [1, 3]])  # label 1: FN, TP

# confusion_matrix is jitted itself; this checks it also traces inside a caller's jitted step.
jitted_confusion = jax.jit(lambda p, labels, valid=None: metrics.confusion_matrix(p, labels, valid=valid))


@pytest.mark.parametrize("fn", [metrics.confusion_matrix, jitted_confusion], ids=["direct", "inside_jit"])
def test_clip_confusion_matches_hand_count(fn):
  c = fn(jnp.asarray(PREDICTED), jnp.asarray(LABELS))
  assert c.dtype == jnp.int32 and c.shape == (2, 2)
  np.testing.assert_array_equal(c, HAND)


def test_classification_metrics_match_hand_values():
  m = metrics.classification_metrics(HAND)
  # acc = (3+4)/10, P = 3/(3+2), R = 3/(3+1), F1 = 2*0.6*0.75/1.35, FDR = 2/(2+4), MDR = 1/(3+1),
  # balanced accuracy = (R + TN/(TN+FP)) / 2 = (3/4 + 4/6) / 2
  expected = {"acc": 0.7, "precision": 0.6, "recall": 0.75, "f1": 2 / 3, "fdr": 1 / 3, "mdr": 0.25,
              "bacc": (0.75 + 4 / 6) / 2}
  assert m.keys() == expected.keys()
  for key, value in expected.items():
    assert m[key] == pytest.approx(value, abs=1e-12), key
    assert type(m[key]) is float


@pytest.mark.parametrize("fn", [metrics.confusion_matrix, jitted_confusion], ids=["direct", "inside_jit"])
def test_valid_mask_drops_padded_entries(fn):
  # Two padding clips (label 1, predicted 0) that would count as FN if not masked out.
  labels = np.concatenate([LABELS, [1, 1]])
  predicted = np.concatenate([PREDICTED, [0, 0]])
  valid = np.concatenate([np.ones(10, bool), [False, False]])
  np.testing.assert_array_equal(fn(predicted, labels, valid=valid), HAND)
  np.testing.assert_array_equal(fn(predicted, labels, valid=np.ones(12, bool)), HAND + [[0, 0], [2, 0]])


def test_out_of_range_ids_are_ignored():
  c = metrics.confusion_matrix(np.array([0, 1, 1, 5]), np.array([0, -1, 1, 1]))
  np.testing.assert_array_equal(c, [[1, 0], [0, 1]])


def test_zero_over_zero_is_zero():
  # Only normal clips, all predicted normal: no positives, no positive predictions.
  c = metrics.confusion_matrix(np.zeros(5, np.int32), np.zeros(5, np.int32))
  np.testing.assert_array_equal(c, [[5, 0], [0, 0]])
  m = metrics.classification_metrics(c)
  assert m == {"acc": 1.0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "fdr": 0.0, "mdr": 0.0, "bacc": 0.5}
  empty = metrics.classification_metrics(np.zeros((2, 2), np.int32))
  assert all(v == 0.0 for v in empty.values())


def test_segmentation_metrics_of_two_masks_by_hand():
  # Two 2x3 masks. Image 1: label / predicted
  #   0 0 1     0 1 1    -> (l,p): 00 01 11 / 00 10 11
  #   0 1 1     0 0 1
  # Image 2: label all 0, predicted 1 only in the last pixel -> five 00 and one 01.
  labels = np.array([[[0, 0, 1], [0, 1, 1]], [[0, 0, 0], [0, 0, 0]]])
  predicted = np.array([[[0, 1, 1], [0, 0, 1]], [[0, 0, 0], [0, 0, 1]]])
  c = jitted_confusion(predicted, labels)
  np.testing.assert_array_equal(c, [[7, 2], [1, 2]])
  m = metrics.segmentation_metrics(c)
  # IoU_0 = 7/(7+2+1) = 0.7, IoU_1 = 2/(2+2+1) = 0.4, mIoU = 0.55, pixel acc = 9/12
  assert m["iou_0"] == pytest.approx(0.7)
  assert m["iou_1"] == pytest.approx(0.4)
  assert m["miou"] == pytest.approx(0.55)
  assert m["pixel_acc"] == pytest.approx(0.75)


def test_segmentation_class_absent_everywhere_is_left_out_of_the_mean():
  c = metrics.confusion_matrix(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)))
  m = metrics.segmentation_metrics(c)
  assert m == {"miou": 1.0, "pixel_acc": 1.0, "iou_0": 1.0, "iou_1": 0.0}
  assert metrics.segmentation_metrics(np.zeros((2, 2)))["miou"] == 0.0


def test_masked_segmentation_under_jit_with_three_classes_matches_numpy():
  rng = np.random.default_rng(0)
  labels, predicted = rng.integers(0, 3, (4, 8, 8)), rng.integers(0, 3, (4, 8, 8))
  valid = rng.random((4, 8, 8)) < 0.7
  step = jax.jit(functools.partial(metrics.confusion_matrix, num_classes=3))
  c = np.asarray(step(predicted, labels, valid=valid))
  expected = np.zeros((3, 3), np.int64)
  np.add.at(expected, (labels[valid], predicted[valid]), 1)
  np.testing.assert_array_equal(c, expected)
  m = metrics.segmentation_metrics(c)
  ious = np.diag(expected) / (expected.sum(0) + expected.sum(1) - np.diag(expected))
  assert m["miou"] == pytest.approx(ious.mean())
  assert [m[f"iou_{k}"] for k in range(3)] == pytest.approx(list(ious))


def test_bad_shapes_raise():
  with pytest.raises(ValueError, match="differ in shape"):
    metrics.confusion_matrix(np.zeros(3), np.zeros(4))
  with pytest.raises(ValueError, match="valid mask"):
    metrics.confusion_matrix(np.zeros(3), np.zeros(3), valid=np.ones(2, bool))
  with pytest.raises(ValueError, match="2x2"):
    metrics.classification_metrics(np.zeros((3, 3)))
