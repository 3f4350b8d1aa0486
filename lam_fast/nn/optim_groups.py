"""Which optimiser each parameter belongs to, declared by the module that builds it.

Muon orthogonalises the update of a hidden weight matrix; it is wrong for input embeddings,
output heads, codebooks and vectors (biases, norm gains), which take AdamW. A parameter's name
cannot tell them apart (the predictor's ``cond_embed`` is a hidden MLP, the IDM's ``head`` feeds
the predictor), so a module states the role of its parameters when it builds them with
:func:`declare`, and :func:`optimizer_groups` reads the declarations. An undeclared parameter
follows its shape: a 2-D weight is a hidden matrix (Muon), anything else takes AdamW.
"""

from __future__ import annotations

from torch import nn

MUON = "muon"
ADAMW = "adamw"
GROUPS = (MUON, ADAMW)

_ATTR = "_optimizer_groups"  # on the declaring module: {parameter name relative to it: group}


def declare(module: nn.Module, group: str, *names: str) -> nn.Module:
    """Put ``module``'s parameters ``names`` (dotted, relative to it; all of them when none are
    named) in ``group``. A declaration made by an enclosing module wins over one made inside it:
    the model that wires a submodule knows what its parameters do there. Returns ``module``."""
    if group not in GROUPS:
        raise ValueError(f"unknown optimizer group {group!r}; expected one of {GROUPS}")
    names = names or tuple(name for name, _ in module.named_parameters())
    for name in names:
        module.get_parameter(name)  # raises AttributeError for a name the module does not have
    module.__dict__.setdefault(_ATTR, {}).update(dict.fromkeys(names, group))
    return module


def _declared(modules: dict[str, nn.Module], name: str) -> str | None:
    parts = name.split(".")
    for cut in range(len(parts)):  # the outermost declaring module first
        tags = modules.get(".".join(parts[:cut]), None)
        tags = None if tags is None else tags.__dict__.get(_ATTR)
        if tags and ".".join(parts[cut:]) in tags:
            return tags[".".join(parts[cut:])]
    return None


def optimizer_groups(model: nn.Module) -> dict[str, str]:
    """Every parameter of ``model`` (by its name in ``named_parameters``) mapped to MUON or ADAMW."""
    modules = dict(model.named_modules())
    out = {}
    for name, param in model.named_parameters():
        group = _declared(modules, name)
        out[name] = group if group is not None else (MUON if param.dim() == 2 else ADAMW)
    return out
