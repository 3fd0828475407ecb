"""Visual prompters: shapes, parameter counts, identity at zero, out-of-place addition, random-patch sampling."""

import pytest
import torch

from dl1.models.prompters import FixedPatchPrompter, PadPrompter, RandomPatchPrompter, build_prompter


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_pad_30_on_224_has_69840_parameters_and_touches_only_the_border():
    pad = PadPrompter(prompt_size=30, image_size=224)
    assert n_params(pad) == 69_840
    prompt = pad.prompt()
    assert prompt.shape == (1, 3, 224, 224)
    assert torch.all(prompt[..., 30:194, 30:194] == 0)
    # every border pixel carries a parameter (randn is never exactly 0)
    border = torch.ones(224, 224, dtype=torch.bool)
    border[30:194, 30:194] = False
    assert torch.all(prompt[..., border] != 0)


def test_pad_layout_matches_the_course_concatenation():
    pad = PadPrompter(prompt_size=2, image_size=8)
    p = pad.prompt()[0]
    torch.testing.assert_close(p[:, :2, :], pad.pad_up[0])
    torch.testing.assert_close(p[:, 6:, :], pad.pad_down[0])
    torch.testing.assert_close(p[:, 2:6, :2], pad.pad_left[0])
    torch.testing.assert_close(p[:, 2:6, 6:], pad.pad_right[0])


def test_fixed_patch_is_top_left_and_has_3_parameters_at_size_1():
    fp = FixedPatchPrompter(prompt_size=1, image_size=224)
    assert n_params(fp) == 3
    x = torch.randn(2, 3, 224, 224)
    y = fp(x)
    diff = (y - x)
    torch.testing.assert_close(diff[:, :, 0, 0], fp.patch[0, :, 0, 0].expand(2, 3))
    diff[:, :, 0, 0] = 0
    assert torch.all(diff == 0)


@pytest.mark.parametrize("method", ["padding", "fixed_patch", "random_patch"])
def test_zero_prompt_is_identity_and_input_is_not_modified(method):
    prompter = build_prompter(method, prompt_size=4, image_size=16, init_method="zeros")
    x = torch.randn(5, 3, 16, 16)
    before = x.clone()
    y = prompter(x)
    assert torch.equal(y, x)
    assert y.data_ptr() != x.data_ptr()
    random = build_prompter(method, prompt_size=4, image_size=16, init_method="random")
    y = random(x)
    assert torch.equal(x, before)  # out of place
    assert not torch.equal(y, x)


@pytest.mark.parametrize("method", ["padding", "fixed_patch", "random_patch"])
def test_gradient_reaches_only_the_prompted_pixels(method):
    prompter = build_prompter(method, prompt_size=3, image_size=12)
    x = torch.randn(2, 3, 12, 12)
    prompter(x).sum().backward()
    for p in prompter.parameters():
        # d/dv sum(x + v) = batch size for every prompt entry
        torch.testing.assert_close(p.grad, torch.full_like(p, 2.0))


def test_random_patch_moves_between_calls_and_is_reproducible_under_a_seed():
    a = RandomPatchPrompter(prompt_size=2, image_size=32, seed=7)
    b = RandomPatchPrompter(prompt_size=2, image_size=32, seed=7)
    b.load_state_dict(a.state_dict())
    x = torch.zeros(1, 3, 32, 32)
    locations_a, locations_b = [], []
    for _ in range(6):
        ya, yb = a(x), b(x)
        assert torch.equal(ya, yb)
        locations_a.append(a.last_location)
        locations_b.append(b.last_location)
        i, j = a.last_location
        torch.testing.assert_close(ya[..., i:i + 2, j:j + 2], a.patch)
        assert torch.count_nonzero(ya) == 12
    assert locations_a == locations_b
    assert len(set(locations_a)) > 1
    c = RandomPatchPrompter(prompt_size=2, image_size=32, seed=8)
    assert [c.sample_location() for _ in range(6)] != locations_a


def test_random_patch_generator_state_is_saved_and_restored():
    a = RandomPatchPrompter(prompt_size=1, image_size=16, seed=3)
    for _ in range(3):
        a.sample_location()
    state = a.state_dict()
    expected = [a.sample_location() for _ in range(4)]
    b = RandomPatchPrompter(prompt_size=1, image_size=16, seed=99)
    b.load_state_dict(state)
    assert [b.sample_location() for _ in range(4)] == expected


def test_prompter_follows_input_dtype():
    prompter = PadPrompter(prompt_size=2, image_size=8)
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    assert prompter(x).dtype == torch.float64
    assert prompter.pad_up.dtype == torch.float32


def test_bad_sizes_and_inputs_are_rejected():
    with pytest.raises(ValueError, match="pad size"):
        PadPrompter(prompt_size=5, image_size=8)
    with pytest.raises(ValueError, match="patch size"):
        FixedPatchPrompter(prompt_size=9, image_size=8)
    with pytest.raises(ValueError, match="init method"):
        PadPrompter(prompt_size=1, image_size=8, init_method="empty")
    with pytest.raises(ValueError, match="expects images"):
        PadPrompter(prompt_size=1, image_size=8)(torch.zeros(1, 3, 9, 9))
    with pytest.raises(ValueError, match="unknown visual prompt"):
        build_prompter("corner", 1, 8)


def test_full_image_patch_covers_everything():
    fp = FixedPatchPrompter(prompt_size=8, image_size=8)
    assert torch.equal(fp.prompt(), fp.patch)
    rp = RandomPatchPrompter(prompt_size=8, image_size=8)
    assert torch.equal(rp.prompt(), rp.patch)
