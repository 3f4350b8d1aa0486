"""StateDecoder, the pixel encoder's exact inverse, decoder save/load and `lam-fast train-decoder`."""

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lam_fast.models import TransformerConfig
from lam_fast.models.decoder import (
    StateDecoder,
    decode_to_pixels,
    load_decoder,
    save_decoder,
)
from lam_fast.models.encoders import build_encoder

CFG = TransformerConfig(depth=2, width=48, heads=2)


def _perturb(module, seed=0, scale=0.05):
    """Move every parameter off its init (AdaLN-zero blocks start as the identity, which hides bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return module


def _decoder(seed=0, **kwargs):
    torch.manual_seed(seed)
    return StateDecoder(12, (4, 4), 16, CFG, **kwargs)  # 4x4 grid of 4x4-pixel patches


@pytest.mark.parametrize("patch_size", [4, 8])
def test_pixel_encoder_inverse_round_trips(patch_size):
    encoder = build_encoder("pixels", 32, patch_size=patch_size)
    video = torch.rand(2, 3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    video[0, 0] = 0.0  # the clamp must keep exact 0 and 1
    video[0, 1] = 1.0
    decoded = decode_to_pixels(encoder.encode(video), encoder)
    assert decoded.shape == video.shape
    torch.testing.assert_close(decoded, video, atol=1e-6, rtol=0)
    assert decoded.min() >= 0 and decoded.max() <= 1
    frames = torch.randint(0, 256, (1, 2, 3, 32, 32), dtype=torch.uint8)
    torch.testing.assert_close(decode_to_pixels(encoder.encode(frames), encoder), frames.float() / 255, atol=1e-6,
                               rtol=0)


def test_decode_without_decoder_needs_the_pixel_encoder():
    with pytest.raises(ValueError, match="train-decoder"):
        decode_to_pixels(torch.zeros(1, 1, 4, 8), SimpleNamespace(name="vjepa2"))


def test_decoder_shapes_range_and_encoder_check():
    decoder = _perturb(_decoder())
    states = torch.randn(2, 3, 16, 12)
    out = decoder(states)
    assert out.shape == (2, 3, 3, 16, 16)
    assert out.min() > 0 and out.max() < 1  # sigmoid
    tubelets = _decoder(frames_per_state=2)(states)
    assert tubelets.shape == (2, 6, 3, 16, 16)
    with pytest.raises(ValueError, match="states must be"):
        decoder(torch.randn(2, 3, 15, 12))
    encoder = build_encoder("pixels", 16, patch_size=4)  # grid 4x4 but dim 48, not 12
    with pytest.raises(ValueError, match="does not match"):
        decode_to_pixels(states, encoder, decoder)
    with pytest.raises(ValueError, match="divide"):
        StateDecoder(12, (3, 3), 16, CFG)


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_decoder_is_frame_causal(backend):
    decoder = _perturb(_decoder(backend=backend), scale=0.2).eval()
    states = torch.randn(1, 4, 16, 12, generator=torch.Generator().manual_seed(1))
    changed = states.clone()
    changed[:, 2] += torch.randn(16, 12)
    with torch.no_grad():
        a, b = decoder(states), decoder(changed)
    torch.testing.assert_close(a[:, :2], b[:, :2], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, 2], b[:, 2]) and not torch.allclose(a[:, 3], b[:, 3])  # later frames see it


def test_save_load_round_trip(tmp_path):
    decoder = _perturb(_decoder(), seed=3).eval()
    run = tmp_path / "run"
    assert load_decoder(run) is None and load_decoder(tmp_path) is None
    save_decoder(decoder, run / "decoder", {"metrics": {"psnr": 21.5}})
    assert sorted(p.name for p in (run / "decoder").iterdir()) == ["decoder.json", "decoder.safetensors"]
    meta = json.loads((run / "decoder" / "decoder.json").read_text())
    assert meta["metrics"] == {"psnr": 21.5} and meta["grid"] == [4, 4] and meta["config"]["width"] == 48
    states = torch.randn(2, 3, 16, 12)
    for where in (run, run / "decoder"):  # a run directory or the decoder directory
        loaded = load_decoder(where)
        assert isinstance(loaded, StateDecoder) and not loaded.training
        with torch.no_grad():
            assert torch.equal(loaded(states), decoder(states))
        assert loaded.meta["metrics"]["psnr"] == 21.5


def test_fit_decoder_moved_to_training_and_the_old_path_warns():
    """models/ holds no training code; the old import path still answers, naming the new one."""
    import lam_fast.models.decoder as decoder_module
    from lam_fast.training.decoder import fit_decoder

    assert "fit_decoder" not in decoder_module.__all__
    with pytest.warns(DeprecationWarning, match="lam_fast.training.decoder.fit_decoder"):
        assert decoder_module.fit_decoder is fit_decoder


def _write_moving_square():
    """tests/training/conftest.py's video writer (loaded by path: `import conftest` is ambiguous)."""
    path = Path(__file__).parents[1] / "training" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_training_videos_for_decoder", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_moving_square


@pytest.mark.filterwarnings("ignore:VideoClipDataset skips")
def test_train_decoder_command(tmp_path, capsys):
    from lam_fast.cli import main as cli_main
    from lam_fast.training import make_config, train

    write = _write_moving_square()
    videos = tmp_path / "videos"
    videos.mkdir()
    for i, v in enumerate([(1, 0), (0, 2), (-2, 1)]):
        write(videos / f"clip{i}.mp4", velocity=v, seconds=2.0, size=32)
    (videos / "corrupt.mp4").write_bytes(b"\x00garbage" * 50)  # skipped
    run = tmp_path / "run"
    train(make_config(engine="local", preset="tiny", image_size=32, patch_size=8, num_frames=4, fps=4.0,
                      batch_size=2, num_workers=0, latent_dim=8, log_every=1, reg="sparse", data=str(videos),
                      steps=1, save_every=1, out=str(run)))
    out_json = tmp_path / "decoder_metrics.json"
    assert cli_main(["train-decoder", "--ckpt", str(run), "--data", str(videos), "--steps", "30", "--clips", "5",
                     "--batch-size", "4", "--lr", "3e-3", "--width", "48", "--heads", "2",
                     "--json", str(out_json)]) == 0
    result = json.loads(out_json.read_text())
    assert result["steps"] == 30 and result["clips_train"] == 4 and result["clips_heldout"] == 1
    assert result["lpips"] is None and "not installed" in result["lpips_reason"]
    assert 0 < result["l1"] < 0.5 and result["psnr"] > 5 and -1 <= result["ssim"] <= 1
    assert result["train_l1_last"] < result["train_l1_first"]
    assert result["inverse_psnr"] is None or result["inverse_psnr"] > 100  # pixels: float round-off only
    decoder = load_decoder(run)
    assert decoder is not None and decoder.meta["metrics"]["psnr"] == result["psnr"]
    assert "train-decoder: held-out L1" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main(["train-decoder", "--ckpt", str(run), "--data", str(videos), "--clips", "1"])
