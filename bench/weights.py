"""The trained tiny models: their configurations and the checked safetensors files they ship as."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from .digits import POOLED_DIM, TEXT_DIM
from .models import Flux, FluxParams, WanModel, WanParams
from .standin.sampling import FlowModel

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
FAMILIES = ("flux", "wan")
PARAMS = {
    "flux": FluxParams(in_channels=4, hidden_size=64, num_heads=4, depth=2, depth_single_blocks=4, mlp_ratio=2.0,
                       context_in_dim=TEXT_DIM, vec_in_dim=POOLED_DIM),
    "wan": WanParams(in_dim=4, out_dim=4, dim=64, ffn_dim=128, freq_dim=64, text_dim=TEXT_DIM, num_heads=4, num_layers=6),
}
MULTIPLIER = {"flux": 1.0, "wan": 1000.0}  # ModelSamplingDiscreteFlow multiplier of each family
SHIFT = {"flux": 1.0, "wan": 3.0}  # schedule shift used for sampling


class WeightsError(ValueError):
    """A weights file that does not belong to the model it is loaded into."""


def build(family: str, params=None) -> nn.Module:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}.")
    params = params or PARAMS[family]
    return Flux(params) if family == "flux" else WanModel(params)


def weights_path(family: str) -> Path:
    return WEIGHTS_DIR / f"{family}_digits.safetensors"


def save(model: nn.Module, family: str, path: Path, info: dict) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"family": family, "params": json.dumps(asdict(model.params)), **{k: str(v) for k, v in info.items()}}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=metadata)


def load_trained(family: str, path: Path | None = None) -> FlowModel:
    """The trained model of ``family`` ready to sample; a clear error when the file is missing or foreign."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path or weights_path(family))
    if not path.is_file():
        raise FileNotFoundError(f"No trained {family} weights at {path}. Train them with `python -m bench.train {family}`.")
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata() or {}
    if metadata.get("family") != family:
        raise WeightsError(f"{path} holds {metadata.get('family') or 'unknown'} weights, not {family}; pick the {family}_digits file.")
    model = build(family)
    state = load_file(str(path))
    expected = model.state_dict()
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items() if k in state and state[k].shape != v.shape
    ]
    if problems:
        raise WeightsError(
            f"{path} does not fit the {family} benchmark model ({len(problems)} problems, e.g. {'; '.join(problems[:3])}). "
            f"Retrain with `python -m bench.train {family}`."
        )
    model.load_state_dict(state)
    return FlowModel(model.eval().requires_grad_(False), MULTIPLIER[family])
