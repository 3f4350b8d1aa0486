"""The one small-model fitting loop (lam_fast.training.fit) and its three callers.

The trajectories below were recorded with the three separate loops that fit.py replaced
(``models/decoder.py: fit_decoder``, ``training/controller.py: train_controller``,
``planning/sim.py: train_action_model``, commit 6f1f156) on the same tiny problems: the callers
must draw the same batches in the same order under the same schedule. (On the machine that
recorded them the new loop reproduced them bit for bit; the tolerance only absorbs BLAS
differences between CPUs, far below what one different batch or learning rate changes.)
"""

import pytest
import torch
from torch import nn

from lam_fast.models import (
    ActionConditionedWorldModel,
    CrossAttentionController,
    MLPController,
    ModelConfig,
    TransformerConfig,
)
from lam_fast.models.decoder import StateDecoder, decode_to_pixels
from lam_fast.models.encoders import build_encoder
from lam_fast.training.action_model import ActionModelTraining, train_action_model
from lam_fast.training.controller import ControllerTraining, train_controller
from lam_fast.training.decoder import fit_decoder
from lam_fast.training.fit import FitSettings, fit

DECODER_UINT8 = [0.2030351608991623, 0.1723080426454544, 0.1538943499326706, 0.12911462783813477,
                 0.12350569665431976, 0.11437041312456131, 0.09868650883436203, 0.09498351812362671,
                 0.09676864743232727, 0.09367820620536804, 0.09070291370153427, 0.09450358897447586]
DECODER_FLOAT_BIG_BATCH = [0.2085239291191101, 0.1999492347240448, 0.19657257199287415, 0.19432252645492554,
                           0.18572284281253815, 0.18219339847564697, 0.17925097048282623]
CONTROLLER_CROSS = [3.6146950721740723, 2.707274913787842, 2.010500192642212, 2.863372325897217,
                    1.9025263786315918, 2.675297975540161, 1.6138361692428589, 1.5660499334335327,
                    2.009720802307129, 1.498364806175232, 1.7207677364349365, 1.942986249923706,
                    1.5683338642120361, 1.6153150796890259, 2.547938108444214]
CONTROLLER_MLP_BIG_BATCH = [2.1420788764953613, 1.8747371435165405, 2.7708022594451904, 2.428597927093506,
                            2.0150961875915527, 2.877755880355835, 2.1502180099487305, 1.820900559425354,
                            2.1407229900360107]
ACTION_MODEL = [0.1929318904876709, 0.2053116410970688, 0.21056140959262848, 0.20980530977249146,
                0.1804138422012329, 0.1851302981376648, 0.1676095724105835, 0.12713740766048431,
                0.12328743934631348, 0.12911902368068695]


def _same_trajectory(losses, recorded):
    assert len(losses) == len(recorded)
    torch.testing.assert_close(torch.tensor(losses, dtype=torch.float64), torch.tensor(recorded, dtype=torch.float64),
                               rtol=1e-4, atol=1e-6)


def _decoder_data():
    """(pixels encoder, its states, frames): 6 clips of smooth frames, a per-clip colour plus a ramp."""
    encoder = build_encoder("pixels", 16, patch_size=4)
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 0.5, 16).view(1, 1, 1, 1, 16)
    frames = (torch.rand(6, 3, 3, 1, 1, generator=g) * 0.5 + ramp).clamp(0, 1).expand(6, 3, 3, 16, 16)
    return encoder, encoder.encode(frames), frames


def test_fit_decoder_lowers_l1():
    encoder, states, frames = _decoder_data()
    torch.manual_seed(0)
    decoder = StateDecoder(encoder.dim, encoder.grid, 16, TransformerConfig(depth=2, width=48, heads=2))
    before = (decode_to_pixels(states, encoder, decoder) - frames).abs().mean().item()
    losses = fit_decoder(decoder, states, (frames * 255).round().to(torch.uint8), steps=40, batch_size=4, lr=3e-3)
    with torch.no_grad():
        after = (decode_to_pixels(states, encoder, decoder) - frames).abs().mean().item()
    assert len(losses) == 40 and not decoder.training
    assert after < 0.5 * before, (before, after)


def test_fit_decoder_keeps_its_trajectory():
    encoder, states, frames = _decoder_data()
    torch.manual_seed(0)
    decoder = StateDecoder(encoder.dim, encoder.grid, 16, TransformerConfig(depth=2, width=48, heads=2))
    losses = fit_decoder(decoder, states, (frames * 255).round().to(torch.uint8), steps=12, batch_size=4, lr=3e-3,
                         seed=3)
    _same_trajectory(losses, DECODER_UINT8)
    assert not decoder.training
    torch.manual_seed(1)  # float frames, a batch larger than the data (clipped to it), weight decay, warm-up
    decoder = StateDecoder(encoder.dim, encoder.grid, 16, TransformerConfig(depth=1, width=32, heads=2))
    losses = fit_decoder(decoder, states, frames, steps=7, batch_size=10, lr=1e-3, weight_decay=0.01,
                         warmup_frac=0.3, seed=5)
    _same_trajectory(losses, DECODER_FLOAT_BIG_BATCH)


def test_train_controller_keeps_its_trajectory():
    g = torch.Generator().manual_seed(0)
    m = 64
    actions = torch.randn(m, 2, generator=g)
    view = torch.randint(0, 2, (m,), generator=g) * 2 - 1
    states = torch.randn(m, 4, 3, generator=g) * 0.1
    states[:, 0, 0] = view.float()
    targets = torch.cat([actions * view[:, None], torch.zeros(m, 2)], dim=1)
    torch.manual_seed(0)
    cross = CrossAttentionController(2, 3, 4, 4, width=16, heads=2)
    losses = train_controller(cross, actions, states, targets,
                              ControllerTraining(steps=15, warmup_steps=3, batch_size=16, lr=3e-3, seed=2))
    _same_trajectory(losses, CONTROLLER_CROSS)
    torch.manual_seed(0)
    mlp = MLPController(2, 4, hidden=16)
    losses = train_controller(mlp, actions, None, targets,
                              ControllerTraining(steps=9, warmup_steps=0, batch_size=100, lr=1e-2))
    _same_trajectory(losses, CONTROLLER_MLP_BIG_BATCH)


def test_train_action_model_keeps_its_trajectory():
    g = torch.Generator().manual_seed(0)
    direction = 0.3 * torch.randn(2, 4 * 6, generator=g)
    s0 = torch.randn(1, 4, 6, generator=g)
    states, actions = [], []
    for length in (9, 7, 9, 8):  # episodes of different lengths: windows of the shortest's size
        a = torch.rand(length, 2, generator=g) * 2 - 1
        states.append(torch.cat([s0, s0 + (a @ direction).view(length, 4, 6).cumsum(0)]))
        actions.append(a)
    torch.manual_seed(0)
    model = ActionConditionedWorldModel(ModelConfig(reg="deterministic"), state_dim=6, grid=(2, 2), action_dim=2)
    losses = train_action_model(model, states, actions,
                                ActionModelTraining(steps=10, batch_size=4, num_frames=5, lr=3e-3, seed=4,
                                                    grad_clip=0.05))
    _same_trajectory(losses, ACTION_MODEL)


def test_fit_draws_batches_from_its_seed_and_follows_the_schedule():
    """The batches depend on (seed, population, batch_size) only; the learning rate warms up
    linearly, then decays by the cosine; the module ends in eval mode; clipping bounds the step."""
    seen, rates, norms = [], [], []
    module = nn.Linear(1, 1, bias=False)

    def loss_of(index):
        seen.append(index.tolist())
        return (module.weight - 100.0).pow(2).sum()

    settings = FitSettings(steps=6, lr=0.1, warmup_frac=0.5, grad_clip=1e-3, seed=7)
    original = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        norms.append(module.weight.grad.norm().item())
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim.AdamW, "step", spy)
        losses = fit(module, loss_of, population=5, batch_size=3, settings=settings)
    g = torch.Generator().manual_seed(7)
    assert seen == [torch.randint(5, (3,), generator=g).tolist() for _ in range(6)]
    assert len(losses) == 6 and not module.training
    assert rates == pytest.approx([0.1 / 3, 0.2 / 3, 0.1, 0.1, 0.075, 0.025])
    assert max(norms) == pytest.approx(1e-3)  # a gradient of ~200, clipped


def test_fit_validates():
    module = nn.Linear(1, 1)
    with pytest.raises(ValueError, match="invalid fit settings"):
        FitSettings(steps=0, lr=1e-3)
    with pytest.raises(ValueError, match="invalid fit settings"):
        FitSettings(steps=5, lr=1e-3, warmup_frac=1.0)
    with pytest.raises(ValueError, match="population and batch_size"):
        fit(module, lambda index: module.weight.sum(), population=0, batch_size=2, settings=FitSettings(steps=1, lr=1.0))
