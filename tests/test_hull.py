"""The row-wise convex hull raster against scikit-image's ``convex_hull_image``, voxel for
voxel, and the scope that lets ``regionprops`` (cp_measure's ConvexArea / Solidity) use it."""

import warnings

import numpy as np
import pytest
from scipy import ndimage as ndi


def _shapes():
    from skimage.morphology import ball

    from spotlight_scale.core.synth import PRESETS, synth_field

    rng = np.random.default_rng(3)
    shapes = [ball(6), np.ones((3, 4, 5), bool), ball(4)[:, :, :5],
              np.pad(ball(3), 2)[::-1, :, ::2], np.eye(6, dtype=bool)[None].repeat(3, 0)]
    shapes += [rng.random(tuple(rng.integers(2, 14, 3))) < rng.uniform(0.05, 0.9)
               for _ in range(60)]
    shapes += [ndi.gaussian_filter(rng.random((18, 28, 28)), 3) > 0.5 for _ in range(6)]
    # nuclei as segmented (irregular, tilted, touching the crop's faces)
    f = synth_field((24, 96, 96), (0.29,) * 3, np.random.default_rng(5), PRESETS["v1"])
    lab, _ = ndi.label(f["mask"])
    shapes += [lab[sl] == i + 1 for i, sl in enumerate(ndi.find_objects(lab))]
    return shapes


def test_row_wise_hull_equals_scikit_image_voxel_for_voxel():
    from skimage.morphology import convex_hull_image

    from spotlight_scale.core.hull import convex_hull_image_3d

    shapes = _shapes()
    assert len(shapes) > 75
    for obj in shapes:
        ref = convex_hull_image(obj)
        got = convex_hull_image_3d(obj)
        assert got.dtype == bool and got.shape == obj.shape
        np.testing.assert_array_equal(got, ref, err_msg=str(obj.shape))


def test_flat_objects_are_scikit_images_own_answer():
    """qhull refuses a flat set: scikit-image warns and returns an empty hull; so do we."""
    from skimage.morphology import convex_hull_image

    from spotlight_scale.core.hull import convex_hull_image_3d

    for obj in (np.ones((1, 4, 5), bool), np.ones((3, 1, 1), bool), np.ones((1, 1, 1), bool)):
        with warnings.catch_warnings(record=True) as ours:
            warnings.simplefilter("always")
            got = convex_hull_image_3d(obj)
        with warnings.catch_warnings(record=True) as theirs:
            warnings.simplefilter("always")
            ref = convex_hull_image(obj)
        np.testing.assert_array_equal(got, ref)
        assert len(ours) == len(theirs)


def test_scope_gives_regionprops_the_same_solidity_and_restores_scikit_image():
    import skimage.morphology.convex_hull as ch
    from skimage.measure import regionprops_table

    from spotlight_scale.core.hull import fast_convex_hull
    from spotlight_scale.core.synth import PRESETS, synth_field

    original = ch.convex_hull_image
    f = synth_field((24, 96, 96), (0.29,) * 3, np.random.default_rng(6), PRESETS["v1"])
    lab, n = ndi.label(f["mask"])
    assert n >= 3
    props = ("label", "area_convex", "solidity")
    ref = regionprops_table(lab, properties=props)
    with fast_convex_hull():
        assert ch.convex_hull_image is not original
        with fast_convex_hull():  # nested
            pass
        assert ch.convex_hull_image is not original
        got = regionprops_table(lab, properties=props)
        # 2D images keep scikit-image's own function
        flat = ch.convex_hull_image(lab[12] > 0)
    assert ch.convex_hull_image is original
    np.testing.assert_array_equal(flat, original(lab[12] > 0))
    for p in ("area_convex", "solidity"):
        np.testing.assert_array_equal(got[p], ref[p])
    with pytest.raises(RuntimeError), fast_convex_hull():
        raise RuntimeError("inside")
    assert ch.convex_hull_image is original


def test_boxed_inner_boundaries_equal_scikit_image_and_scope_restores_it():
    import skimage.segmentation as seg

    from spotlight_scale.core.boxed import boxed_find_boundaries, inner_boundaries
    from spotlight_scale.core.synth import PRESETS, synth_field

    original = seg.find_boundaries
    f = synth_field((16, 64, 64), (0.29,) * 3, np.random.default_rng(4), PRESETS["v1"])
    lab, n = ndi.label(f["mask"])
    assert n >= 3
    cases = [lab, np.pad(lab, ((4, 1), (0, 7), (9, 0))), lab[:, :20, :],  # touching faces
             np.zeros((5, 6, 7), np.int32), lab[8]]  # no object; 2D
    for img in cases:
        np.testing.assert_array_equal(inner_boundaries(img),
                                      original(img, mode="inner"))
    with boxed_find_boundaries():
        assert seg.find_boundaries is not original
        np.testing.assert_array_equal(seg.find_boundaries(lab, mode="thick"),
                                      original(lab, mode="thick"))
    assert seg.find_boundaries is original
