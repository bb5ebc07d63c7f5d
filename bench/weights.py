"""The trained tiny models: their configurations and the checked safetensors files they ship as."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from .digits import POOLED_DIM, TEXT_DIM
from .models import Flux, FluxParams, WanModel, WanParams
from .models.qwen_image import QwenImageParams, QwenImageTransformer2DModel
from .standin.sampling import FlowModel

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
FAMILIES = ("flux", "wan", "flux_deep", "wan_deep", "qwen", "flux_holdout", "wan_holdout")  # trained and shipped
# The held-out pair: the deep layouts trained again from other seeds, the Wan one made rougher than any
# model a default was chosen on. Nothing is tuned on them; they only check each default (issue 31).
HOLDOUT = ("flux_holdout", "wan_holdout_rough")
# Made from a trained model at load time: the weight matrices of its timestep pathway (what turns t into
# every block's modulation) perturbed by seeded noise of this share of their own spread. What the blocks
# compute from image and prompt stays trained, so it still samples its digits, but its features move
# unevenly from step to step, as real models' do next to these tiny ones: a case where the gate has to
# decide. (Noise in every matrix instead costs digits long before the features get as rough.)
ROUGHENED = {"wan_rough": ("wan_deep", 0.3, 0), "wan_holdout_rough": ("wan_holdout", 0.4, 2)}  # source, share, seed
TIMESTEP_PATHWAY = ("time_embedding.", "time_projection.")
MODELS = FAMILIES + tuple(ROUGHENED)
# The deep families have FLUX.1's 19 double + 38 single blocks and Wan 2.1 1.3B's 30 blocks at a
# width small enough to train on CPU: the share of block 0 in a forecast call is then the real one.
LAYOUT = {"flux": "flux", "wan": "wan", "flux_deep": "flux", "wan_deep": "wan", "wan_rough": "wan", "qwen": "qwen",
          "flux_holdout": "flux", "wan_holdout": "wan", "wan_holdout_rough": "wan"}
PARAMS = {
    "flux": FluxParams(in_channels=4, hidden_size=64, num_heads=4, depth=2, depth_single_blocks=4, mlp_ratio=2.0,
                       context_in_dim=TEXT_DIM, vec_in_dim=POOLED_DIM),
    "wan": WanParams(in_dim=4, out_dim=4, dim=64, ffn_dim=128, freq_dim=64, text_dim=TEXT_DIM, num_heads=4, num_layers=6),
    "flux_deep": FluxParams(in_channels=4, hidden_size=32, num_heads=2, depth=19, depth_single_blocks=38, mlp_ratio=2.0,
                            context_in_dim=TEXT_DIM, vec_in_dim=POOLED_DIM),
    "wan_deep": WanParams(in_dim=4, out_dim=4, dim=32, ffn_dim=64, freq_dim=64, text_dim=TEXT_DIM, num_heads=2, num_layers=30),
    # Qwen-Image's layout (issue 11): six dual-stream blocks, image tokens only at the output.
    "flux_holdout": FluxParams(in_channels=4, hidden_size=32, num_heads=2, depth=19, depth_single_blocks=38, mlp_ratio=2.0,
                               context_in_dim=TEXT_DIM, vec_in_dim=POOLED_DIM),
    "wan_holdout": WanParams(in_dim=4, out_dim=4, dim=32, ffn_dim=64, freq_dim=64, text_dim=TEXT_DIM, num_heads=2, num_layers=30),
    "qwen": QwenImageParams(in_channels=4, hidden_size=64, num_heads=4, num_layers=6, joint_attention_dim=TEXT_DIM,
                            mlp_ratio=2.0),
}
# ModelSamplingDiscreteFlow multiplier and the sampling schedule's shift of each family.
MULTIPLIER = {"flux": 1.0, "wan": 1000.0, "flux_deep": 1.0, "wan_deep": 1000.0, "wan_rough": 1000.0, "qwen": 1.0,
              "flux_holdout": 1.0, "wan_holdout": 1000.0, "wan_holdout_rough": 1000.0}
SHIFT = {"flux": 1.0, "wan": 3.0, "flux_deep": 1.0, "wan_deep": 3.0, "wan_rough": 3.0, "qwen": 1.0,
         "flux_holdout": 1.0, "wan_holdout": 3.0, "wan_holdout_rough": 3.0}


class WeightsError(ValueError):
    """A weights file that does not belong to the model it is loaded into."""


def trained_source(family: str) -> str:
    """The trained family whose weights ``family`` is made from (itself, unless roughened)."""
    return ROUGHENED[family][0] if family in ROUGHENED else family


def build(family: str, params=None) -> nn.Module:
    if family not in MODELS:
        raise ValueError(f"unknown model family {family!r}; expected one of {MODELS}.")
    params = params or PARAMS[trained_source(family)]
    return {"flux": Flux, "wan": WanModel, "qwen": QwenImageTransformer2DModel}[LAYOUT[family]](params)


def weights_path(family: str) -> Path:
    return WEIGHTS_DIR / f"{trained_source(family)}_digits.safetensors"


def save(model: nn.Module, family: str, path: Path, info: dict) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"family": family, "params": json.dumps(asdict(model.params)), **{k: str(v) for k, v in info.items()}}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=metadata)


def training_info(family: str) -> dict:
    """What the weights file says about its training (steps, seconds, final loss, ...)."""
    from safetensors import safe_open

    with safe_open(str(weights_path(family)), "pt") as f:
        metadata = f.metadata() or {}
    info = {k: v for k, v in metadata.items() if k not in ("family", "params")}
    if family in ROUGHENED:
        source, share, _ = ROUGHENED[family]
        info["roughened"] = f"{source}'s weights, its timestep pathway's matrices perturbed by {share:g} of their spread"
    return info


@torch.no_grad()
def roughen(model: nn.Module, share: float, seed: int = 0) -> None:
    """Add seeded Gaussian noise of ``share`` times each timestep-pathway weight matrix's own spread."""
    generator = torch.Generator().manual_seed(seed)
    for name, weight in model.named_parameters():
        if weight.ndim >= 2 and name.startswith(TIMESTEP_PATHWAY):
            weight.add_(torch.randn(weight.shape, generator=generator) * weight.std() * share)


def load_trained(family: str, path: Path | None = None) -> FlowModel:
    """The trained model of ``family`` ready to sample; a clear error when the file is missing or foreign."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if family in ROUGHENED:
        source, share, seed = ROUGHENED[family]
        flow = load_trained(source, path)
        roughen(flow.diffusion_model, share, seed)
        return flow

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
    return FlowModel(model.eval().requires_grad_(False), MULTIPLIER[family], SHIFT[family])
