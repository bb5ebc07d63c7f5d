"""The bench's trained models inside ComfyUI's own model classes, for sampling in a real ComfyUI.

The bench's tiny models (bench/models) follow ComfyUI's block loops, patch keys and layer order, so the
node meets the same blocks in either. This module builds each trained model as ComfyUI builds a checkpoint
(``comfy.supported_models`` config -> ``comfy.model_base`` model with its ``model_sampling``) and copies
the trained weights in under ComfyUI's key names. Three things are not ComfyUI's defaults, each because the
bench layout computes less than ComfyUI's class would, and each an exact embedding, not an approximation:

* the bench layouts have no RMS norm on queries and keys; ComfyUI's Flux (``QKNorm``) and Qwen-Image
  (``norm_q``/``norm_k``/``norm_added_*``) always build one, so those modules become ``nn.Identity``
  (Wan's has a switch: ``qk_norm=False``);
* RoPE shares a head's channel pairs out over the position axes as bench/models/layers.py does; ComfyUI's
  Wan hard-codes its split for 128-wide heads (``d - 4 * (d // 6)``, which is the bench's at d = 128 but not
  at the bench's d = 16), so Wan's ``rope_embedder`` is ComfyUI's own ``EmbedND`` with the bench's split;
* Qwen-Image's feed-forward is 4x wide in ComfyUI, 2x in the bench: the extra hidden units get zero
  weights in and out, so they add exactly nothing.

``check_same_output`` proves the mapping before anything is sampled: ComfyUI's model and the bench's give
the same velocity on the same inputs to float tolerance. The latent format is an identity one with the
digits' 4 channels, so ComfyUI's samples are the bench's latents (bench/digits.py decodes them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .digits import FRAMES, POOLED_DIM, TEXT_DIM
from .models.layers import rope_pairs_per_axis
from .weights import LAYOUT, PARAMS, load_trained, trained_source

SAME_OUTPUT_TOLERANCE = 1e-4  # largest |ComfyUI - bench| of the velocity, relative to its largest value


@dataclass(frozen=True)
class Built:
    """A trained model twice: as ComfyUI's ModelPatcher and as the bench's FlowModel it was copied from."""

    family: str
    patcher: Any  # comfy.model_patcher.ModelPatcher
    bench: Any  # bench.standin.sampling.FlowModel

    @property
    def layout(self) -> str:
        return LAYOUT[self.family]


def latent_shape(family: str) -> tuple[int, ...]:
    """One sample's latent as ComfyUI holds it: images [4, 8, 8] (FLUX), video [4, 3, 8, 8] (Wan); Qwen-Image's
    ComfyUI class takes its images as one-frame video [4, 1, 8, 8] since v0.3.64."""
    return {"flux": (4, 8, 8), "wan": (4, FRAMES, 8, 8), "qwen": (4, 1, 8, 8)}[LAYOUT[family]]


def identity_latent_format(family: str) -> Any:
    """comfy/latent_formats.py ``LatentFormat`` with the digits' 4 channels and no scaling: process_in/out are
    the identity, so ComfyUI samples the bench's own latent space."""
    import comfy.latent_formats

    dimensions = len(latent_shape(family)) - 1
    return type("DigitLatents", (comfy.latent_formats.LatentFormat,),
                {"latent_channels": 4, "latent_dimensions": dimensions, "scale_factor": 1.0})


def unet_config(family: str) -> tuple[Any, dict]:
    """The supported_models config class and the unet_config that give ComfyUI's class the bench's sizes."""
    import comfy.supported_models

    params = PARAMS[trained_source(family)]
    layout = LAYOUT[family]
    if layout == "flux":
        config = {
            "image_model": "flux", "in_channels": params.in_channels, "out_channels": params.in_channels,
            "vec_in_dim": params.vec_in_dim, "context_in_dim": params.context_in_dim, "hidden_size": params.hidden_size,
            "mlp_ratio": params.mlp_ratio, "num_heads": params.num_heads, "depth": params.depth,
            "depth_single_blocks": params.depth_single_blocks,
            "axes_dim": [2 * n for n in rope_pairs_per_axis(params.hidden_size // params.num_heads, 3)],
            "theta": int(params.theta), "patch_size": params.patch_size, "qkv_bias": True,
            "guidance_embed": params.guidance_embed,
        }
        return comfy.supported_models.Flux, _with_required_flux_fields(config)
    if layout == "wan":
        return comfy.supported_models.WAN21_T2V, {
            "image_model": "wan2.1", "model_type": "t2v", "patch_size": (1, 2, 2), "text_len": 512,
            "in_dim": params.in_dim, "dim": params.dim, "ffn_dim": params.ffn_dim, "freq_dim": params.freq_dim,
            "text_dim": params.text_dim, "out_dim": params.out_dim, "num_heads": params.num_heads,
            "num_layers": params.num_layers, "window_size": (-1, -1), "qk_norm": False, "cross_attn_norm": True,
            "eps": 1e-6,
        }
    head_dim = params.hidden_size // params.num_heads
    return comfy.supported_models.QwenImage, {
        "image_model": "qwen_image", "patch_size": 2, "in_channels": params.in_channels * 4,
        "out_channels": params.in_channels, "num_layers": params.num_layers, "attention_head_dim": head_dim,
        "num_attention_heads": params.num_heads, "joint_attention_dim": params.joint_attention_dim,
        "axes_dims_rope": tuple(2 * n for n in rope_pairs_per_axis(head_dim, 3)),
    }


def _with_required_flux_fields(config: dict) -> dict:
    """FluxParams fields this ComfyUI requires with their FLUX.1 values (v0.30.0 added ``txt_ids_dims``, [] for
    FLUX.1, comfy/model_detection.py); a field unknown here is an error, not a guess."""
    from comfy.ldm.flux.model import FluxParams

    flux1_values = {"txt_ids_dims": []}
    for param in dataclasses.fields(FluxParams):
        required = param.default is dataclasses.MISSING and param.default_factory is dataclasses.MISSING
        if required and param.name not in config:
            if param.name not in flux1_values:
                raise RuntimeError(f"this ComfyUI's FluxParams requires {param.name!r}; add its FLUX.1 value")
            config[param.name] = flux1_values[param.name]
    return config


def _split_rows(weight: torch.Tensor, names: tuple[str, ...], prefix: str, suffix: str) -> dict:
    return {f"{prefix}{name}.{suffix}": part for name, part in zip(names, weight.chunk(len(names), dim=0))}


def _linear(state: dict, source: str, target: str) -> dict:
    return {f"{target}.{k}": state[f"{source}.{k}"] for k in ("weight", "bias")}


def _split_linear(state: dict, source: str, targets: tuple[str, ...], prefix: str) -> dict:
    out = {}
    for k in ("weight", "bias"):
        out.update(_split_rows(state[f"{source}.{k}"], targets, prefix, k))
    return out


def flux_state(state: dict, params) -> dict:
    out = {k: v for k, v in state.items() if k.split(".")[0] in ("img_in", "time_in", "vector_in", "txt_in", "guidance_in")}
    for i in range(params.depth):
        b = f"double_blocks.{i}."
        for stream in ("img", "txt"):
            out.update(_linear(state, f"{b}{stream}_mod", f"{b}{stream}_mod.lin"))
            out.update(_linear(state, f"{b}{stream}_qkv", f"{b}{stream}_attn.qkv"))
            out.update(_linear(state, f"{b}{stream}_proj", f"{b}{stream}_attn.proj"))
            for layer in ("0", "2"):
                out.update(_linear(state, f"{b}{stream}_mlp.{layer}", f"{b}{stream}_mlp.{layer}"))
    for i in range(params.depth_single_blocks):
        b = f"single_blocks.{i}."
        out.update(_linear(state, f"{b}modulation", f"{b}modulation.lin"))
        out.update(_linear(state, f"{b}linear1", f"{b}linear1"))
        out.update(_linear(state, f"{b}linear2", f"{b}linear2"))
    out.update(_linear(state, "final_layer.adaLN_modulation", "final_layer.adaLN_modulation.1"))
    out.update(_linear(state, "final_layer.linear", "final_layer.linear"))
    return out


def wan_state(state: dict, params) -> dict:
    out = {k: v for k, v in state.items() if k.split(".")[0] in ("patch_embedding", "text_embedding", "time_embedding",
                                                                    "time_projection")}
    for i in range(params.num_layers):
        b = f"blocks.{i}."
        out[f"{b}modulation"] = state[f"{b}modulation"].reshape(1, 6, params.dim)
        out.update(_split_linear(state, f"{b}self_qkv", ("q", "k", "v"), f"{b}self_attn."))
        out.update(_linear(state, f"{b}self_o", f"{b}self_attn.o"))
        out.update(_linear(state, f"{b}cross_q", f"{b}cross_attn.q"))
        out.update(_split_linear(state, f"{b}cross_kv", ("k", "v"), f"{b}cross_attn."))
        out.update(_linear(state, f"{b}cross_o", f"{b}cross_attn.o"))
        out.update(_linear(state, f"{b}norm3", f"{b}norm3"))
        out.update(_linear(state, f"{b}ffn.0", f"{b}ffn.0"))
        out.update(_linear(state, f"{b}ffn.2", f"{b}ffn.2"))
    out["head.modulation"] = state["head.modulation"].reshape(1, 2, params.dim)
    # The bench's head writes each token's values channel-major (c, then the 2x2 patch), ComfyUI's unpatchify
    # reads them patch-major (comfy/ldm/wan/model.py ``unpatchify``: 'bfhwpqrc'): the same rows, reordered.
    patch = 4
    order = torch.arange(params.out_dim * patch).reshape(params.out_dim, patch).t().flatten()
    out["head.head.weight"] = state["head.head.weight"][order]
    out["head.head.bias"] = state["head.head.bias"][order]
    return out


def qwen_state(state: dict, params) -> dict:
    out = {"txt_norm.weight": state["txt_norm.weight"]}
    out.update(_linear(state, "time_text_embed.0", "time_text_embed.timestep_embedder.linear_1"))
    out.update(_linear(state, "time_text_embed.2", "time_text_embed.timestep_embedder.linear_2"))
    for name in ("img_in", "txt_in", "proj_out", "norm_out.linear"):
        out.update(_linear(state, name, name))
    wide = 4 * params.hidden_size  # comfy/ldm/qwen_image/model.py FeedForward(mult=4)
    for i in range(params.num_layers):
        b = f"transformer_blocks.{i}."
        out.update(_linear(state, f"{b}img_mod", f"{b}img_mod.1"))
        out.update(_linear(state, f"{b}txt_mod", f"{b}txt_mod.1"))
        out.update(_split_linear(state, f"{b}img_qkv", ("to_q", "to_k", "to_v"), f"{b}attn."))
        out.update(_split_linear(state, f"{b}txt_qkv", ("add_q_proj", "add_k_proj", "add_v_proj"), f"{b}attn."))
        out.update(_linear(state, f"{b}img_out", f"{b}attn.to_out.0"))
        out.update(_linear(state, f"{b}txt_out", f"{b}attn.to_add_out"))
        for stream in ("img", "txt"):
            up_w, up_b = state[f"{b}{stream}_mlp.0.weight"], state[f"{b}{stream}_mlp.0.bias"]
            down_w = state[f"{b}{stream}_mlp.2.weight"]
            hidden = up_w.shape[0]
            out[f"{b}{stream}_mlp.net.0.proj.weight"] = torch.cat([up_w, up_w.new_zeros(wide - hidden, up_w.shape[1])])
            out[f"{b}{stream}_mlp.net.0.proj.bias"] = torch.cat([up_b, up_b.new_zeros(wide - hidden)])
            out[f"{b}{stream}_mlp.net.2.weight"] = torch.cat([down_w, down_w.new_zeros(down_w.shape[0], wide - hidden)], 1)
            out[f"{b}{stream}_mlp.net.2.bias"] = state[f"{b}{stream}_mlp.2.bias"]
    return out


STATE_MAPS = {"flux": flux_state, "wan": wan_state, "qwen": qwen_state}


def without_qk_norms(diffusion_model: nn.Module) -> None:
    """ComfyUI's Flux ``QKNorm`` and Qwen-Image's query/key norms become identities (the bench layouts have none)."""
    names = ("query_norm", "key_norm", "norm_q", "norm_k", "norm_added_q", "norm_added_k")
    for module in list(diffusion_model.modules()):
        for name in names:
            if isinstance(getattr(module, name, None), nn.Module) and not isinstance(getattr(module, name), nn.Identity):
                setattr(module, name, nn.Identity())


def with_bench_rope(diffusion_model: nn.Module, family: str) -> None:
    """Wan's ``rope_embedder`` as ComfyUI's own EmbedND with the bench's split of a head's pairs over (t, h, w)."""
    if LAYOUT[family] != "wan":
        return
    from comfy.ldm.flux.layers import EmbedND

    params = PARAMS[trained_source(family)]
    head_dim = params.dim // params.num_heads
    axes = [2 * n for n in rope_pairs_per_axis(head_dim, 3)]
    diffusion_model.rope_embedder = EmbedND(dim=head_dim, theta=10000.0, axes_dim=axes)


def build(family: str) -> Built:
    """The trained ``family`` in ComfyUI's class (fp32, CPU), wrapped as comfy.sd.load_diffusion_model wraps a
    checkpoint, next to the bench model it was copied from. Every ComfyUI parameter is set from the bench's."""
    import comfy.model_management
    import comfy.model_patcher

    bench = load_trained(family)
    config_class, config = unet_config(family)
    model_config = config_class(dict(config))
    model_config.latent_format = identity_latent_format(family)()  # an instance, as BASE.__init__ makes it
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({})
    diffusion_model = model.diffusion_model
    without_qk_norms(diffusion_model)
    with_bench_rope(diffusion_model, family)
    state = STATE_MAPS[LAYOUT[family]](bench.diffusion_model.state_dict(), PARAMS[trained_source(family)])
    missing, unexpected = diffusion_model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{family}: ComfyUI's {type(diffusion_model).__name__} and the bench's weights differ: "
                           f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    diffusion_model.eval().requires_grad_(False)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                               offload_device=comfy.model_management.unet_offload_device())
    return Built(family, patcher, bench)


def probe_inputs(family: str, batch: int = 3, seed: int = 0) -> dict:
    """Random latents, timesteps and prompts in the shapes sampling feeds (bench shapes: Qwen without the frame)."""
    generator = torch.Generator().manual_seed(seed)
    shape = latent_shape(family)
    x = torch.randn((batch, *shape), generator=generator)
    inputs = {"x": x, "sigma": torch.rand(batch, generator=generator) * 0.9 + 0.05,
              "context": torch.randn(batch, 6, TEXT_DIM, generator=generator)}
    if LAYOUT[family] == "flux":
        inputs["y"] = torch.randn(batch, POOLED_DIM, generator=generator)
    return inputs


@torch.no_grad()
def check_same_output(built: Built) -> float:
    """The largest difference of the two models' velocities on the same inputs, relative to the velocity's size;
    raises when it is above SAME_OUTPUT_TOLERANCE (a wrong key mapping gives order 1)."""
    inputs = probe_inputs(built.family)
    x, sigma = inputs["x"], inputs["sigma"]
    multiplier = built.bench.multiplier
    extra = {"y": inputs["y"]} if "y" in inputs else {}
    bench_x = x[:, :, 0] if built.layout == "qwen" else x
    expected = built.bench.diffusion_model(bench_x, sigma * multiplier, inputs["context"], transformer_options={}, **extra)
    if built.layout == "qwen":
        expected = expected[:, :, None]
    comfy_model = built.patcher.model
    timestep = comfy_model.model_sampling.timestep(sigma).float()
    if abs(float(comfy_model.model_sampling.timestep(torch.tensor(0.5))) - 0.5 * multiplier) > 1e-6:
        raise RuntimeError(f"{built.family}: ComfyUI's timestep for sigma 0.5 is not the bench's ({0.5 * multiplier})")
    actual = comfy_model.diffusion_model(x, timestep, inputs["context"], transformer_options={}, **extra)
    difference = float((actual - expected).abs().max() / expected.abs().max())
    if not difference <= SAME_OUTPUT_TOLERANCE:
        raise RuntimeError(f"{built.family}: ComfyUI's model differs from the bench's by {difference:.3g} of the "
                           f"velocity's size (tolerance {SAME_OUTPUT_TOLERANCE:g}): the weight mapping is wrong")
    return difference
