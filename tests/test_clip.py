"""CLIP plumbing on a tiny random CLIP with the real, offline BPE tokenizer: loading errors, weight files, text
features (unit norm, computed once, prompt ensembles), logits, class-name handling, dataset wrapper."""

import json

import pytest
import torch
import torch.nn.functional as F

from dl1.data import clip as D
from dl1.errors import DL1Error
from dl1.hub import clip as H
from dl1.hub.clip import pretrained as HP
from dl1.models import clip as C

TINY = {"embed_dim": 32, "quick_gelu": True,
        "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64, "layers": 2, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


@pytest.fixture(scope="module")
def tiny():
    return C.tiny_clip(seed=0)


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    """Register open_clip configs 'dl1-tiny' (= tiny_clip's shape) and 'dl1-tiny-wide' (another width)."""
    import open_clip

    d = tmp_path_factory.mktemp("configs")
    (d / "dl1-tiny.json").write_text(json.dumps(TINY))
    wide = json.loads(json.dumps(TINY))
    wide["vision_cfg"]["width"] = 96
    (d / "dl1-tiny-wide.json").write_text(json.dumps(wide))
    open_clip.add_model_config(d)
    return "dl1-tiny"


class SpyTokenizer:
    """Wraps the real tokenizer and records every call."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __call__(self, texts):
        self.calls.append(list(texts))
        return self.inner(texts)


# -- bundle and tokenizer ----------------------------------------------------------------------------------------------
def test_tiny_bundle_is_frozen_eval_float32(tiny):
    assert tiny.random_init and tiny.arch == "tiny-test"
    assert not tiny.model.training
    assert all(not p.requires_grad and p.dtype == torch.float32 for p in tiny.model.parameters())
    assert tiny.image_size == 64 and tiny.embed_dim == 32


def test_real_bpe_tokenizer(tiny):
    tokens = tiny.tokenizer(["a photo of a cat"])  # (1, 77)
    assert tokens.shape == (1, 77)
    ids = tokens[0][tokens[0] > 0].tolist()
    assert ids[0] == 49406 and ids[-1] == 49407  # <start_of_text> ... <end_of_text>
    assert len(ids) == 2 + 5  # one BPE token per common word
    import open_clip

    assert open_clip.decode(tokens[0]).replace("<start_of_text>", "").split("<end_of_text>")[0].strip() == \
        "a photo of a cat"


def test_preprocess_gives_model_input(tiny):
    from PIL import Image

    img = Image.new("RGB", (32, 32), (255, 0, 0))
    x = tiny.preprocess(img)  # (3, 64, 64)
    assert x.shape == (3, 64, 64)
    expected = (1.0 - C.OPENAI_MEAN[0]) / C.OPENAI_STD[0]
    assert torch.allclose(x[0], torch.full((64, 64), expected), atol=1e-4)


# -- names and loading errors ------------------------------------------------------------------------------------------
def test_course_names_map_to_open_clip():
    assert H.open_clip_name("ViT-B/32") == "ViT-B-32"
    assert H.open_clip_name("ViT-B/16") == "ViT-B-16"
    assert H.open_clip_name("RN50") == "RN50"
    assert H.open_clip_name("ViT-B-32") == "ViT-B-32"


def test_unknown_architecture_names_close_matches():
    with pytest.raises(DL1Error, match=r"unknown CLIP architecture 'ViT-B/31'.*ViT-B/32"):
        H.load_clip("ViT-B/31")


def test_missing_checkpoint_file_is_one_clear_line(tmp_path):
    with pytest.raises(DL1Error, match="CLIP weights file not found") as info:
        H.load_clip("ViT-B/32", weights=tmp_path / "nope.pt")
    assert "\n" not in str(info.value)


def test_garbage_checkpoint_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DL1Error, match="cannot read CLIP weights"):
        H.load_clip("ViT-B/32", weights=bad)


def test_offline_without_cached_weights_fails_fast(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(DL1Error, match=r"not cached and the network is unavailable.*ViT-B-32.pt.*--clip_weights"):
        H.load_clip("ViT-B/32", cache_dir=str(tmp_path / "clip_cache"))
    assert no_network == []  # fails at once: no download attempt, no retries


def test_tag_without_weights():
    with pytest.raises(DL1Error, match="no 'openai' weights for CLIP ViT-B-16-plus"):
        H.load_clip("ViT-B-16-plus", pretrained="openai")


# -- weight files ------------------------------------------------------------------------------------------------------
def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_open_clip_state_dict_round_trip(tiny, tiny_config, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in tiny.model.state_dict().items()}}, path)
    loaded = H.load_clip(tiny_config, weights=path)
    assert _same_weights(loaded.model, tiny.model)
    assert not loaded.model.training and not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.weights == str(path) and not loaded.random_init
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(loaded.model.encode_image(x), tiny.model.encode_image(x), atol=1e-5)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_openai_torchscript_archive(tiny, tiny_config, tmp_path):
    path = tmp_path / "openai.pt"
    torch.jit.save(torch.jit.script(tiny.model), str(path))
    loaded = H.load_clip(tiny_config, weights=path)
    assert loaded.info["weights_format"] == "openai_torchscript" and loaded.info["quick_gelu"]
    assert _same_weights(loaded.model, tiny.model)


def test_weights_of_another_architecture(tiny, tiny_config, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(tiny.model.state_dict(), path)
    with pytest.raises(DL1Error, match=r"do not fit CLIP dl1-tiny-wide.*other shapes.*wrong --arch"):
        H.load_clip("dl1-tiny-wide", weights=path)


# -- text features and logits ------------------------------------------------------------------------------------------
def test_text_features_unit_norm_and_shape(tiny):
    f = C.text_features(tiny.model, tiny.tokenizer, ["cat", "dog", "sea_lion"], ["a photo of a {}"])
    assert f.shape == (3, 32) and f.dtype == torch.float32
    assert torch.allclose(f.norm(dim=-1), torch.ones(3), atol=1e-6)
    assert not f.is_inference()  # usable as a constant in graphs that train prompts


def test_class_names_and_templates_reach_tokenizer(tiny):
    spy = SpyTokenizer(tiny.tokenizer)
    C.text_features(tiny.model, spy, ["sea_lion", "maple_tree"], ["This is a photo of a {}", lambda c: f"{c}!"])
    assert spy.calls == [["This is a photo of a sea lion", "This is a photo of a maple tree", "sea lion!",
                          "maple tree!"]]


def test_ensemble_is_mean_of_normalised_features_renormalised(tiny):
    names, templates = ["cat", "dog", "truck"], ["a photo of a {}.", "a drawing of a {}.", "{}"]
    got = C.text_features(tiny.model, tiny.tokenizer, names, templates)
    with torch.no_grad():
        per_template = [F.normalize(tiny.model.encode_text(tiny.tokenizer([t.format(n) for n in names])), dim=-1)
                        for t in templates]
    expected = sum(per_template) / len(templates)
    expected = expected / expected.norm(dim=-1, keepdim=True)
    assert torch.allclose(got, expected, atol=1e-5)
    single = C.text_features(tiny.model, tiny.tokenizer, names, templates[:1])
    assert torch.allclose(single, per_template[0], atol=1e-5)
    assert not torch.allclose(got, single, atol=1e-3)


def test_text_features_chunking_matches(tiny):
    names = [f"class {i}" for i in range(7)]
    a = C.text_features(tiny.model, tiny.tokenizer, names, ["{}", "a {}"], chunk=3)
    b = C.text_features(tiny.model, tiny.tokenizer, names, ["{}", "a {}"])
    assert torch.allclose(a, b, atol=1e-5)


def test_clip_logits_equal_hand_computation():
    torch.manual_seed(0)
    img, txt = torch.randn(4, 8), torch.randn(3, 8)
    log_scale = torch.tensor(4.6052)
    got = C.clip_logits(img, txt, log_scale)
    hand = torch.empty(4, 3)
    for i in range(4):
        for j in range(3):
            cos = (img[i] @ txt[j]) / (img[i].norm() * txt[j].norm())
            hand[i, j] = 100.0 * cos
    assert torch.allclose(got, hand, rtol=1e-4)


def test_zeroshot_text_features_once_and_logits(tiny):
    spy = SpyTokenizer(tiny.tokenizer)
    bundle = C.ClipBundle(tiny.model, tiny.preprocess, spy, "tiny-test", None)
    calls = {"n": 0}
    original = tiny.model.encode_text

    def counting(*a, **k):
        calls["n"] += 1
        return original(*a, **k)

    tiny.model.encode_text = counting
    try:
        zs = C.ZeroshotCLIP(bundle, ["cat", "dog", "fire_truck"], ["This is a photo of a {}"])
        assert len(spy.calls) == 1 and calls["n"] == 1
        x = torch.randn(5, 3, 64, 64)
        with torch.inference_mode():
            logits = zs.model_inference(x)
            logits_again = zs(x)
        assert len(spy.calls) == 1 and calls["n"] == 1  # nothing recomputed per batch
    finally:
        del tiny.model.encode_text
    assert logits.shape == (5, 3) and torch.equal(logits, logits_again)
    assert zs.prompts == ["This is a photo of a cat", "This is a photo of a dog", "This is a photo of a fire truck"]
    assert torch.allclose(zs.logit_scale, tiny.model.logit_scale.exp())
    with torch.no_grad():
        f = tiny.model.encode_image(x)
        t = tiny.model.encode_text(tiny.tokenizer(zs.prompts))
    hand = tiny.model.logit_scale.exp() * F.cosine_similarity(f[:, None, :], t[None, :, :], dim=-1)
    assert torch.allclose(logits, hand, atol=1e-4)


# -- dataset wrapper ---------------------------------------------------------------------------------------------------
def test_load_clip_dataset_with_and_without_noise(tiny, tmp_path):
    from dl1.data.fake import write_cifar

    write_cifar(tmp_path, "cifar10", n_train=10, n_test=6)
    clean = D.load_clip_dataset("cifar10", "test", tiny.preprocess, tmp_path)
    noisy = D.load_clip_dataset("cifar10", "test", tiny.preprocess, tmp_path, test_noise=True)
    assert len(clean) == 6 and clean.classes[0] == "airplane"
    (x, y), (xn, yn) = clean[0], noisy[0]
    assert x.shape == (3, 64, 64) and y == yn
    diff = xn - x
    assert 0.07 < diff.std().item() < 0.13 and abs(diff.mean().item()) < 0.02  # N(0, 0.1) after normalisation


# -- rank shares of the batches (torchrun) ----------------------------------------------------------------------------
def test_the_ranks_batches_together_are_one_process_batches():
    """Training: two ranks' i-th shuffled batches of 4 together are the i-th batch of 8 one process takes, in memory
    (RawSplit) and through a DataLoader; evaluation: every second image from the rank, nothing left out."""
    images = torch.arange(20 * 2 * 2 * 3, dtype=torch.float32).view(20, 2, 2, 3)
    raw = D.RawSplit(images, torch.arange(20), torch.nn.Identity())
    dataset = torch.utils.data.TensorDataset(images, torch.arange(20))
    cpu = torch.device("cpu")
    for split in (raw, dataset):
        whole = [t.tolist() for _, t in D.batches(split, 8, cpu, shuffle=True, seed=5, epoch=2)]
        parts = [[t.tolist() for _, t in D.batches(split, 4, cpu, shuffle=True, seed=5, epoch=2, rank=r,
                                                     world_size=2)] for r in (0, 1)]
        assert len(parts[0]) == len(parts[1]) == len(whole) == 3
        assert [sorted(a + b) for a, b in zip(*parts, strict=True)] == [sorted(w) for w in whole]
        other_epoch = [t.tolist() for _, t in D.batches(split, 8, cpu, shuffle=True, seed=5, epoch=3)]
        assert other_epoch != whole
        scored = [[t.tolist() for _, t in D.batches(D.eval_shard(split, r, 3), 2, cpu)] for r in (0, 1, 2)]
        assert sorted(sum(sum(scored, []), [])) == list(range(20))  # 7 + 7 + 6 images
        assert sorted(scored[0][0] + scored[1][0] + scored[2][0]) == list(range(6))  # one process's first batch
    assert D.eval_shard(raw, 0, 1) is raw


# -- named template sets -----------------------------------------------------------------------------------------------
def test_named_template_sets_match_open_clip():
    import open_clip

    from dl1.models.clip_templates import get_templates

    t80 = get_templates("imagenet80")
    assert len(t80) == 80 and len(set(t80)) == 80 and all(t.count("{}") == 1 for t in t80)
    assert [t.format("dog") for t in t80] == [f("dog") for f in open_clip.OPENAI_IMAGENET_TEMPLATES]
    assert [t.format("dog") for t in get_templates("imagenet7")] == \
        [f("dog") for f in open_clip.SIMPLE_IMAGENET_TEMPLATES]
    c18 = get_templates("cifar18")
    assert len(c18) == 18 and c18[0] == "a photo of a {}." and c18[2] == "a black and white photo of a {}."
    assert c18[8] == "a photo of a big {}." and c18[-1] == "a photo of the big {}."
    assert get_templates("course") == ("This is a photo of a {}",)
    with pytest.raises(DL1Error, match="unknown template set"):
        get_templates("imagenet81")


# -- batch preprocessing -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("h, w, size, crop", [(32, 32, 224, 224), (32, 32, 64, 64), (30, 45, 64, 64),
                                              (100, 80, 64, 60), (32, 32, 20, 20)])
def test_batch_preprocess_is_bit_identical_to_pil(h, w, size, crop):
    import numpy as np
    from PIL import Image
    from torchvision import transforms as T

    pre = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(crop), T.ToTensor(),
                     T.Normalize(C.OPENAI_MEAN, C.OPENAI_STD)])
    batch = D.BatchPreprocess.from_preprocess(pre)
    images = np.random.default_rng(h + w).integers(0, 256, size=(4, h, w, 3), dtype=np.uint8)
    expected = torch.stack([pre(Image.fromarray(a)) for a in images])
    assert torch.equal(batch(torch.from_numpy(images)), expected)


def test_batch_preprocess_of_the_clip_bundle_and_noise(tiny):
    import numpy as np
    from PIL import Image

    images = np.random.default_rng(1).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    expected = torch.stack([tiny.preprocess(Image.fromarray(a)) for a in images])
    assert torch.equal(D.BatchPreprocess.from_preprocess(tiny.preprocess)(torch.from_numpy(images)), expected)
    noisy = D.BatchPreprocess.from_preprocess(tiny.preprocess, noise_std=0.1)(torch.from_numpy(images))
    assert 0.09 < (noisy - expected).std().item() < 0.11


def test_batch_preprocess_refuses_other_pipelines():
    from torchvision import transforms as T

    bilinear = T.Compose([T.Resize(64), T.CenterCrop(64), T.ToTensor(), T.Normalize(C.OPENAI_MEAN, C.OPENAI_STD)])
    assert D.BatchPreprocess.from_preprocess(bilinear) is None
    flipped = T.Compose([T.Resize(64, interpolation=T.InterpolationMode.BICUBIC), T.RandomHorizontalFlip(),
                         T.ToTensor(), T.Normalize(C.OPENAI_MEAN, C.OPENAI_STD)])
    assert D.BatchPreprocess.from_preprocess(flipped) is None


def test_pretrained_tag_found_in_the_caches(tiny, tiny_config, tmp_path, monkeypatch):
    """A tag's weights are read from open_clip's caches (HF hub layout, then the URL file) without any network."""
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    state = {k: v.contiguous().clone() for k, v in tiny.model.state_dict().items()}
    snapshot = tmp_path / "models--someorg--tiny-clip" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    save_file(state, str(snapshot / "open_clip_model.safetensors"))
    (tmp_path / "models--someorg--tiny-clip" / "refs").mkdir()
    (tmp_path / "models--someorg--tiny-clip" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(HP, "pretrained_cfg", lambda name, tag: {"hf_hub": "someorg/tiny-clip/", "quick_gelu": True})
    loaded = H.load_clip(tiny_config, pretrained="mytag", cache_dir=str(tmp_path))
    assert loaded.weights.endswith("open_clip_model.safetensors") and loaded.pretrained == "mytag"
    assert type(loaded.model.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"  # the tag's activation
    assert _same_weights(loaded.model, tiny.model)

    torch.save(state, tmp_path / "tiny-clip.pt")
    monkeypatch.setattr(HP, "pretrained_cfg", lambda name, tag: {"url": "https://example.org/x/tiny-clip.pt"})
    loaded = H.load_clip(tiny_config, pretrained="mytag", cache_dir=str(tmp_path))
    assert loaded.weights == str(tmp_path / "tiny-clip.pt") and _same_weights(loaded.model, tiny.model)


def test_download_path_forces_the_tags_activation(monkeypatch):
    """Online and not cached: open_clip downloads, and the tag's QuickGELU is forced (open_clip only warns)."""
    import open_clip

    seen = {}

    def fake_create(name, **kwargs):
        seen.update(kwargs, name=name)
        raise RuntimeError("no network in tests")

    monkeypatch.setattr(HP, "online", lambda *a, **k: True)
    monkeypatch.setattr(HP, "cached_file", lambda cfg, cache_dir: None)
    monkeypatch.setattr(open_clip, "create_model_and_transforms", fake_create)
    with pytest.raises(DL1Error, match="downloading CLIP ViT-B/32 'openai' weights failed"):
        H.load_clip("ViT-B/32")
    assert seen["name"] == "ViT-B-32" and seen["pretrained"] == "openai" and seen["force_quick_gelu"] is True
