"""Ready-to-sample tiny models with their conditioning: the fixtures of the tests and the demo."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .models import Flux, FluxParams, VaceWanModel, WanModel, WanParams
from .standin.patcher import ModelPatcher
from .standin.protocol import LEGACY, Protocol
from .standin.sampling import Cond, FlowModel

TEXT_TOKENS = 6


@dataclass
class Scene:
    """A patcher holding a model, and what a KSampler node would feed it."""

    patcher: ModelPatcher
    positive: Cond
    negative: Cond
    latent_shape: tuple[int, ...]

    def noise(self, batch: int = 1, seed: int = 0) -> torch.Tensor:
        return torch.randn((batch, *self.latent_shape[1:]), generator=torch.Generator().manual_seed(seed))


def _text(generator: torch.Generator, dim: int) -> torch.Tensor:
    return torch.randn(1, TEXT_TOKENS, dim, generator=generator)


def flux_scene(seed: int = 0, params: FluxParams = FluxParams(), size: int = 8, protocol: Protocol = LEGACY) -> Scene:
    torch.manual_seed(seed)
    model = Flux(params, protocol).eval()
    g = torch.Generator().manual_seed(seed + 1)
    conds = [Cond({"context": _text(g, params.context_in_dim), "y": torch.randn(1, params.vec_in_dim, generator=g)}) for _ in range(2)]
    return Scene(ModelPatcher(FlowModel(model), protocol), *conds, (1, params.in_channels, size, size))


def wan_scene(seed: int = 0, params: WanParams = WanParams(), frames: int = 3, size: int = 8, vace: bool = False,
              protocol: Protocol = LEGACY) -> Scene:
    torch.manual_seed(seed)
    model = (VaceWanModel(params, protocol=protocol) if vace else WanModel(params, protocol)).eval()
    g = torch.Generator().manual_seed(seed + 1)
    conds = []
    for _ in range(2):
        inputs = {"context": _text(g, params.text_dim)}
        if vace:
            inputs["vace_context"] = torch.randn(1, 8, frames, size, size, generator=g)
            inputs["vace_strength"] = [1.0]
        conds.append(Cond(inputs))
    return Scene(ModelPatcher(FlowModel(model, multiplier=1000.0), protocol), *conds, (1, params.in_dim, frames, size, size))
