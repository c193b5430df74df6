"""Batched augmentations: shapes, seeding, and that each does what its name says."""

from __future__ import annotations

import pytest
import torch

from fmnist.augment import AUGMENTATIONS, BatchPlace, build_augment, parse_augment
from fmnist.errors import ConfigError


def _batch(n: int = 16) -> torch.Tensor:
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 8:20, 4:12] = 1.0  # a bright block left of centre
    return x


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _place(n: int = 16, epoch: int = 1, seed: int = 0, index=None) -> BatchPlace:
    return BatchPlace(torch.arange(n) if index is None else index, epoch, seed)


@pytest.mark.parametrize("name", AUGMENTATIONS.names())
def test_every_augmentation_keeps_shape_range_and_is_seeded(name):
    aug = build_augment([name])
    x = _batch()
    a, b = aug(x.clone(), _gen(1), _place(seed=1)), aug(x.clone(), _gen(1), _place(seed=1))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)  # same generator state, same result
    assert not torch.equal(a, aug(x.clone(), _gen(2), _place(seed=2)))  # other draws
    assert a.min() >= 0 and a.max() <= 1.0 + 1e-6


def _altflip_mask(epoch: int, seed: int = 0, index=None) -> torch.Tensor:
    """Which images of a batch (index 0..999 unless given) altflip mirrors."""
    index = torch.arange(1000) if index is None else index
    x = torch.zeros(len(index), 1, 28, 28)
    x[..., :3] = 1.0  # bright on the left: mirrored, bright on the right
    out = build_augment(["altflip"])(x, _gen(epoch), _place(epoch=epoch, seed=seed, index=index))
    assert torch.equal(out[..., :3] + out[..., -3:], torch.ones_like(out[..., :3]))
    return out[:, 0, 0, -1] == 1.0


def test_altflip_flips_each_image_in_alternate_epochs():
    first = _altflip_mask(1)
    assert 0.45 < first.float().mean() < 0.55  # half of them in epoch 1, by the hash
    assert torch.equal(_altflip_mask(2), ~first)  # the others in epoch 2
    assert torch.equal(_altflip_mask(3), first) and torch.equal(_altflip_mask(4), ~first)
    other_seed = _altflip_mask(1, seed=1)
    assert 0.4 < (other_seed != first).float().mean() < 0.6  # the seed picks the half
    order = torch.randperm(1000, generator=_gen(3))  # a function of the image, not its slot
    assert torch.equal(_altflip_mask(2, index=order), ~first[order])


def test_altflip_needs_the_batch_place():
    with pytest.raises(ValueError, match="altflip needs"):
        build_augment(["altflip"])(_batch(), _gen())


def test_flip_with_probability_one_mirrors():
    x = _batch(4)
    out = AUGMENTATIONS.get("flip")(1.0)(x, _gen())
    assert torch.equal(out, x.flip(-1))


def test_translate_moves_content_with_zero_padding_and_keeps_mass_near():
    x = _batch(64)
    out = build_augment(["translate:2"])(x, _gen())
    assert torch.equal(build_augment(["translate:0"])(x, _gen()), x)
    # the block never leaves the frame with a 2-pixel shift: mass is preserved exactly
    torch.testing.assert_close(out.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)))
    moved = (out != x).flatten(1).any(1).float().mean()
    assert moved > 0.8  # 24 of 25 offsets move the block


def test_erase_blanks_a_rectangle_of_bounded_area():
    x = torch.ones(200, 1, 28, 28)
    out = AUGMENTATIONS.get("erase")(1.0)(x, _gen())
    erased = (out == 0).flatten(1).float().mean(1)
    assert (erased > 0).all()
    assert erased.max() <= 0.2 + 1e-6 and erased.min() >= 1 / 784


def test_affine_strength_zero_is_identity_and_default_changes_geometry():
    x = _batch(8)
    torch.testing.assert_close(AUGMENTATIONS.get("affine")(0.0)(x, _gen()), x, atol=1e-5,
                               rtol=0)
    assert (AUGMENTATIONS.get("affine")(None)(x, _gen()) - x).abs().mean() > 0.01


def test_photometric_changes_intensity_not_geometry():
    x = _batch(32) * 0.9
    out = AUGMENTATIONS.get("photometric")(1.0)(x, _gen())
    # blur and line thickening reach at most 2 pixels; background further away stays black
    near = torch.nn.functional.max_pool2d(x, 5, stride=1, padding=2) > 0
    assert (out[~near] == 0).all()
    assert not torch.allclose(out, x)


@pytest.mark.parametrize("spec, match", [
    ("rotate", "unknown augmentation 'rotate'.*Valid"),
    ("alt-flip", "unknown augmentation 'alt-flip'.*altflip"),
    ("translate:two", "'translate:two'.*not a number"),
    ("altflip:half", "'altflip:half'.*not a number"),
])
def test_unknown_and_malformed_augmentations_are_named(spec, match):
    with pytest.raises(ConfigError, match=match) as e:
        parse_augment(spec)
    assert "\n" not in str(e.value)
    assert build_augment([]) is None


# --------------------------------------------------------------------------- raw photos


def _photo(w: int = 300, h: int = 400):
    """A light background with a dark item in its left half."""
    import numpy as np
    from PIL import Image

    a = np.full((h, w, 3), 225, np.uint8)
    a[h // 5 : 4 * h // 5, w // 8 : w // 2] = (30, 40, 90)
    return Image.fromarray(a)


def test_photo_views_are_seeded_rgb_and_sized_like_photos():
    import numpy as np

    from fmnist.photo_augment import SIZE_RANGE, augment_photo, view_rng

    photo = _photo(600, 800)
    a, b = augment_photo(photo, view_rng(0, 3, 1)), augment_photo(photo, view_rng(0, 3, 1))
    assert a.mode == "RGB" and np.array_equal(np.asarray(a), np.asarray(b))
    others = [np.asarray(augment_photo(photo, view_rng(0, 3, v))) for v in range(2, 6)]
    assert not any(np.array_equal(o, np.asarray(a)) for o in others)  # other views differ
    for v in range(8):
        size = max(augment_photo(photo, view_rng(1, 0, v)).size)
        assert SIZE_RANGE[0] <= size <= SIZE_RANGE[1]
    assert max(augment_photo(_photo(120, 160), view_rng(0, 0, 0)).size) <= 160  # no upscaling


def test_photo_views_keep_the_item_where_it_is_so_the_label_holds():
    import numpy as np

    from fmnist.photo_augment import augment_photo, view_rng
    from fmnist.preprocess import preprocess

    for v in range(6):
        view = np.asarray(augment_photo(_photo(), view_rng(0, 0, v)).convert("L"), float)
        dark = view < view.mean() - 40  # the item: never mirrored, cut or lost
        xs = np.nonzero(dark)[1] / view.shape[1]
        assert dark.mean() > 0.15 and np.median(xs) < 0.45
        out = preprocess(augment_photo(_photo(), view_rng(0, 0, v))).image
        assert out.max() == 255 and (out > 0).mean() > 0.3  # still one solid item
