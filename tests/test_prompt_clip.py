"""VisualPromptCLIP and DeepPromptCLIP on a tiny random open_clip model: frozen CLIP, logits, deep-prompt injection."""

import pytest
import torch
import torch.nn.functional as F

from dl1.models.prompt_clip import DeepPromptCLIP, VisualPromptCLIP, count_parameters
from dl1.models.prompters import FixedPatchPrompter, PadPrompter, RandomPatchPrompter

IMAGE, PATCH, BLOCKS, WIDTH = 32, 8, 3, 64  # 16 patch tokens + CLS = 17 tokens


def small_clip():
    import open_clip

    torch.manual_seed(0)
    model = open_clip.model.CLIP(
        embed_dim=32,
        vision_cfg=open_clip.model.CLIPVisionCfg(layers=BLOCKS, width=WIDTH, head_width=32, patch_size=PATCH,
                                                 image_size=IMAGE),
        text_cfg=open_clip.model.CLIPTextCfg(context_length=16, vocab_size=100, width=32, heads=2, layers=1))
    return model.eval()


def text_feats(n=5, dim=32):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(1))


def images(b=4):
    return torch.randn(b, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(2))


def test_visual_prompt_logits_equal_a_hand_computation():
    clip = small_clip()
    with torch.no_grad():
        clip.logit_scale.fill_(torch.log(torch.tensor(100.0)))  # OpenAI's learnt temperature
    text = text_feats()
    model = VisualPromptCLIP(clip, text, PadPrompter(prompt_size=4, image_size=IMAGE))
    x = images()
    with torch.no_grad():
        f = F.normalize(clip.encode_image(x + model.prompt_learner.prompt()), dim=-1)
        expected = clip.logit_scale.exp() * f @ F.normalize(text, dim=-1).t()
        got = model(x)
    assert got.shape == (4, 5)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    assert float(model.logit_scale) == pytest.approx(100.0, rel=1e-5)  # exp(), not the raw log-parameter


def test_only_prompt_parameters_are_trainable_and_clip_is_bit_identical_after_a_step():
    for model in (VisualPromptCLIP(small_clip(), text_feats(), PadPrompter(4, IMAGE)),
                  DeepPromptCLIP(small_clip(), text_feats(), prompt_num=2, injection_layer=1)):
        names = [n for n, _ in model.trainable_parameters()]
        assert names and all(n.startswith("prompt_learner.") for n in names)
        assert not any(p.requires_grad for p in model.clip_model.parameters())
        before = {k: v.clone() for k, v in model.clip_model.state_dict().items()}
        prompt_before = [p.detach().clone() for _, p in model.trainable_parameters()]
        opt = torch.optim.SGD([p for _, p in model.trainable_parameters()], lr=40, momentum=0.9)
        model.train()
        assert not model.clip_model.training  # CLIP stays in eval mode
        loss = F.cross_entropy(model(images()), torch.tensor([0, 1, 2, 3]))
        loss.backward()
        assert all(p.grad is None for p in model.clip_model.parameters())
        opt.step()
        after = model.clip_model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
        assert any(not torch.equal(a, p) for a, (_, p) in zip(prompt_before, model.trainable_parameters()))


def test_deep_prompt_path_without_injection_equals_encode_image():
    clip = small_clip()
    model = DeepPromptCLIP(clip, text_feats(), prompt_num=4, injection_layer=0)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model.custom_encode_image(x, inject=False), clip.encode_image(x),
                                   rtol=1e-5, atol=1e-5)
        assert not torch.allclose(model.custom_encode_image(x), clip.encode_image(x), atol=1e-3)


def test_deep_prompt_path_handles_sequence_first_blocks():
    """Older open_clip runs the blocks on (L, N, D): the same numbers must come out."""
    clip = small_clip()
    model = DeepPromptCLIP(clip, text_feats(), prompt_num=2, injection_layer=1)
    x = images(3)
    with torch.no_grad():
        batch_first = model.custom_encode_image(x)
        clip.visual.transformer.batch_first = False
        for block in clip.visual.transformer.resblocks:
            block.attn.batch_first = False
        torch.testing.assert_close(model.custom_encode_image(x, inject=False), clip.encode_image(x),
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.custom_encode_image(x), batch_first, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [0, 1, BLOCKS - 1])
def test_deep_prompts_lengthen_the_sequence_from_block_k_on(k):
    model = DeepPromptCLIP(small_clip(), text_feats(), prompt_num=3, injection_layer=k)
    lengths = []
    hooks = [blk.register_forward_hook(lambda m, inp, out: lengths.append((inp[0].shape[1], out.shape[1])))
             for blk in model.clip_model.visual.transformer.resblocks]
    with torch.no_grad():
        model(images(2))
    for h in hooks:
        h.remove()
    base = (IMAGE // PATCH) ** 2 + 1
    expected = [base] * k + [base + 3] * (BLOCKS - k)
    assert [i for i, _ in lengths] == expected
    assert [o for _, o in lengths] == expected


def test_deep_prompt_shape_parameters_and_bad_injection_layer():
    model = DeepPromptCLIP(small_clip(), text_feats(), prompt_num=4, injection_layer=2)
    assert model.deep_prompt.shape == (4, 1, WIDTH)
    assert count_parameters(model)["trainable"] == 4 * WIDTH
    with pytest.raises(ValueError, match=r"injection_layer must be in \[0, 2\]"):
        DeepPromptCLIP(small_clip(), text_feats(), injection_layer=BLOCKS)
    with pytest.raises(ValueError, match="injection_layer"):
        DeepPromptCLIP(small_clip(), text_feats(), injection_layer=-1)


def test_deep_prompt_tokens_change_the_output_only_after_injection():
    """Injected at the last block the prompts still reach the CLS token through attention."""
    model = DeepPromptCLIP(small_clip(), text_feats(), prompt_num=2, injection_layer=BLOCKS - 1)
    x = images(2)
    out = model(x)
    out.sum().backward()
    assert model.deep_prompt.grad is not None and model.deep_prompt.grad.abs().sum() > 0


def test_half_precision_tower_gets_a_cast_prompt_and_the_parameter_stays_float32():
    clip = small_clip().to(torch.bfloat16)  # fp16 matmuls are not available on every CPU; bf16 checks the cast path
    dp = DeepPromptCLIP(clip, text_feats(), prompt_num=2, injection_layer=1)
    vp = VisualPromptCLIP(clip, text_feats(), FixedPatchPrompter(2, IMAGE))
    dtypes = []
    hook = clip.visual.transformer.resblocks[1].register_forward_hook(lambda m, i, o: dtypes.append(i[0].dtype))
    with torch.no_grad():
        assert dp(images(2)).dtype == torch.float32
        assert vp(images(2)).shape == (2, 5)
    hook.remove()
    assert dtypes == [torch.bfloat16, torch.bfloat16]
    assert dp.deep_prompt.dtype == torch.float32 and vp.prompt_learner.patch.dtype == torch.float32


def test_set_text_features_swaps_the_classifier():
    model = VisualPromptCLIP(small_clip(), text_feats(5), RandomPatchPrompter(2, IMAGE, seed=0))
    model.set_text_features(text_feats(110))
    assert model.num_classes == 110
    with torch.no_grad():
        assert model(images(2)).shape == (2, 110)
    torch.testing.assert_close(model.text_features.norm(dim=-1), torch.ones(110))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_tower_on_cuda_trains_fp32_prompts():
    clip = small_clip().half().cuda()
    for model in (DeepPromptCLIP(clip, text_feats(), prompt_num=2, injection_layer=1),
                  VisualPromptCLIP(clip, text_feats(), PadPrompter(4, IMAGE))):
        model = model.cuda()
        params = [p for _, p in model.trainable_parameters()]
        assert all(p.dtype == torch.float32 and p.is_cuda for p in params)
        loss = F.cross_entropy(model(images().cuda()), torch.tensor([0, 1, 2, 3], device="cuda"))
        loss.backward()
        assert torch.isfinite(loss) and all(p.grad is not None and p.grad.dtype == torch.float32 for p in params)


def test_frozen_clip_kept_in_bfloat16_under_autocast_trains_float32_prompts():
    """What --precision bf16 does on a GPU (weights in bfloat16, autocast), here on the CPU: the CLIP alone changes
    dtype; logits, loss and the prompt's gradient stay float32, and the logits stay near float32's."""
    for make in (lambda c: DeepPromptCLIP(c, text_feats(), prompt_num=2, injection_layer=1),
                 lambda c: VisualPromptCLIP(c, text_feats(), PadPrompter(4, IMAGE))):
        model = make(small_clip())
        with torch.no_grad():
            reference = model(images())
        model.keep_frozen_in(torch.bfloat16)
        assert {p.dtype for p in model.clip_model.parameters()} == {torch.bfloat16}
        assert model.text_features.dtype == model.logit_scale.dtype == torch.float32
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(images())
            loss = F.cross_entropy(logits, torch.tensor([0, 1, 2, 3]))
        loss.backward()
        assert logits.dtype == loss.dtype == torch.float32 and torch.isfinite(loss)
        params = [p for _, p in model.trainable_parameters()]
        assert all(p.dtype == p.grad.dtype == torch.float32 and p.grad.abs().sum() > 0 for p in params)
        assert (logits.detach() - reference).abs().max() < 0.05 * reference.abs().max()


def test_skip_draws_advances_a_random_patch_as_forward_passes_do():
    a = VisualPromptCLIP(small_clip(), text_feats(), RandomPatchPrompter(2, IMAGE, seed=3))
    b = VisualPromptCLIP(small_clip(), text_feats(), RandomPatchPrompter(2, IMAGE, seed=3))
    with torch.no_grad():
        a(images(1))
        a(images(1))
    b.skip_draws(2)
    assert a.prompt_learner.sample_location() == b.prompt_learner.sample_location()
    VisualPromptCLIP(small_clip(), text_feats(), PadPrompter(2, IMAGE)).skip_draws(3)  # nothing to advance
