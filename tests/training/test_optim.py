"""The Muon / AdamW split: every parameter of every model against an explicit expectation.

Modules declare the group of their parameters at build (``lam_fast.nn.optim_groups``); the
optimiser reads the declarations, never the names. Only the latent-action world model trains with
MuonAdamW; the action-conditioned model, the controllers and the decoder train with AdamW alone
(training/fit.py), so their rows say what MuonAdamW would do with them.
"""

import pytest
import torch

from lam_fast.models import (ActionConditionedWorldModel, CrossAttentionController, LatentActionWorldModel,
                             MLPController, ModelConfig)
from lam_fast.models.config import DiscreteConfig
from lam_fast.models.decoder import StateDecoder
from lam_fast.training.optim import MuonAdamW, split_params

M, A = "muon", "adamw"
DIM, GRID, LATENT, ACTION = 6, (2, 2), 8, 3


def _linear(prefix, group):
    """A Linear: its weight in ``group``, its bias (a vector) in AdamW."""
    return {f"{prefix}.weight": group, f"{prefix}.bias": A}


def _norm(prefix):
    return {f"{prefix}.weight": A, f"{prefix}.bias": A}


def _attention(prefix):
    """nn.MultiheadAttention: fused input projection and output projection, hidden matrices."""
    return {f"{prefix}.in_proj_weight": M, f"{prefix}.in_proj_bias": A, **_linear(f"{prefix}.out_proj", M)}


def _adaln_blocks(prefix, depth):
    out = {}
    for i in range(depth):
        block = f"{prefix}.{i}"
        for layer in ("attn.qkv", "attn.proj", "mlp.0", "mlp.2", "modulation.1"):
            out.update(_linear(f"{block}.{layer}", M))
    return out


def _predictor(prefix, depth, *, conditioned):
    out = _linear(f"{prefix}.embed", A)  # input embedding of the states
    if conditioned:  # the conditioning MLP is hidden: z (from the IDM) or the action in, AdaLN's input out
        out.update({**_linear(f"{prefix}.cond_embed.0", M), **_linear(f"{prefix}.cond_embed.2", M)})
    else:
        out[f"{prefix}.null_cond"] = A
    out.update(_adaln_blocks(f"{prefix}.blocks", depth))
    out.update(_linear(f"{prefix}.final.modulation.1", M))
    out.update(_linear(f"{prefix}.final.unembed", A))  # output head
    return out


def _idm(depth):
    out = {**_linear("idm.embed", A), "idm.pos_embed": A, "idm.query_embed": A}
    for i in range(depth):
        block = f"idm.blocks.{i}"
        out.update({**_norm(f"{block}.norm1"), **_norm(f"{block}.norm2")})
        for layer in ("qkv", "proj", "mlp.0", "mlp.2"):
            out.update(_linear(f"{block}.{layer}", M))
    # the head's output z feeds the predictor's conditioning MLP: a hidden matrix of the joint model
    out.update({**_attention("idm.pool"), **_norm("idm.norm"), **_linear("idm.head", M)})
    return out


def _world_model(reg):
    cfg = ModelConfig(reg=reg, latent_dim=LATENT, discrete=DiscreteConfig(codebook_size=16))
    return LatentActionWorldModel(cfg, state_dim=DIM, grid=GRID)


def _world_model_expectation(reg):
    depth, idm_depth = ModelConfig().predictor.depth, ModelConfig().idm.depth
    if reg == "deterministic":
        return _predictor("predictor", depth, conditioned=False)
    out = {**_idm(idm_depth), **_predictor("predictor", depth, conditioned=True)}
    if reg == "discrete":
        out["regularizer.quantizer.embedding"] = A  # the codebook
    return out


def _cross_attention_controller_expectation():
    out = {**_linear("embed", M), "pos": A}
    for layer in ("linear1", "linear2"):
        out.update(_linear(f"blocks.0.{layer}", M))
    out.update({**_attention("blocks.0.self_attn"), **_norm("blocks.0.norm1"), **_norm("blocks.0.norm2")})
    for layer in ("action.0", "action.2", "action.4", "out_mlp.1.0", "out_mlp.1.2", "head"):
        out.update(_linear(layer, M))
    out.update({**_norm("norm_q"), **_norm("norm_kv"), **_attention("cross"), **_norm("out_mlp.0")})
    return out


MODELS = {
    **{f"world_model-{reg}": (lambda reg=reg: _world_model(reg), lambda reg=reg: _world_model_expectation(reg))
       for reg in ("sparse", "noisy", "discrete", "unconstrained", "deterministic")},
    "action_conditioned": (
        lambda: ActionConditionedWorldModel(ModelConfig(reg="deterministic"), state_dim=DIM, grid=GRID,
                                            action_dim=ACTION),
        lambda: _predictor("predictor", ModelConfig().predictor.depth, conditioned=True),
    ),
    "mlp_controller": (
        lambda: MLPController(ACTION, LATENT, hidden=16),
        lambda: {**_linear("net.0", M), **_linear("net.2", M), **_linear("net.4", M)},
    ),
    "cross_attention_controller": (
        lambda: CrossAttentionController(ACTION, DIM, 4, LATENT, width=16, heads=2, self_blocks=1),
        _cross_attention_controller_expectation,
    ),
    "state_decoder": (
        lambda: StateDecoder(DIM, GRID, 8),
        lambda: {"null_cond": A, **_linear("embed", M), **_adaln_blocks("blocks", 2),
                 **_linear("final.modulation.1", M), **_linear("final.unembed", A)},
    ),
}


def _groups_of(model):
    muon, adamw = split_params(model)
    ids = {id(p): M for p in muon} | {id(p): A for p in adamw}
    return {name: ids.get(id(p)) for name, p in model.named_parameters()}


@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_is_in_its_declared_group(name):
    build, expectation = MODELS[name]
    assert _groups_of(build()) == expectation()


def test_the_split_is_read_from_declarations_not_names():
    """Renaming a submodule (its parameters' names change) moves nothing; frozen parameters are left out."""
    model = _world_model("sparse")
    before = _groups_of(model)
    model.renamed_embed_head = model.predictor  # the same parameters under a second, "embed" name
    del model.predictor
    after = _groups_of(model)
    assert {k.replace("renamed_embed_head.", "predictor."): v for k, v in after.items()} == before
    model.idm.requires_grad_(False)
    assert not any(name.startswith("idm.") and group for name, group in _groups_of(model).items())


def test_muon_adamw_holds_exactly_the_declared_groups():
    model = _world_model("discrete")
    opt = MuonAdamW(model, muon_lr=0.02, adamw_lr=1e-3, weight_decay=0.0)
    groups = _groups_of(model)
    by_id = {id(p): name for name, p in model.named_parameters()}
    assert {by_id[id(p)] for g in opt.muon.param_groups for p in g["params"]} == {n for n, g in groups.items() if g == M}
    assert {by_id[id(p)] for g in opt.adamw.param_groups for p in g["params"]} == {n for n, g in groups.items() if g == A}
    assert all(p.dim() == 2 for g in opt.muon.param_groups for p in g["params"])
    assert torch.optim.Muon in {type(o) for o in opt.parts}
