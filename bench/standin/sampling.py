"""Flow-matching sampling the way ComfyUI drives a model: guider, cond batching, samplers.

Mirrors, at ComfyUI v0.3.64 (a125cd84):
* comfy/samplers.py ``CFGGuider.sample`` (:1013-1045): model options cloned, ModelPatcher
  wrappers merged into them (sampler_helpers.py:152-162), ``outer_sample`` run through the
  OUTER_SAMPLE wrappers with the guider as ``class_obj``; ``outer_sample`` (:990-1011) first
  prepares sampling (sampler_helpers.py:109-139: ``prepare_sampling`` through the PREPARE_SAMPLING
  wrappers, ``estimate_memory`` from the model's ``memory_required``, ``load_models_gpu`` with
  the plan; the conds in the raw form ``convert_cond`` gives them, :57-67); ``inner_sample``
  (:971-986) puts the run's schedule into ``transformer_options["sample_sigmas"]``;
* ``sampling_function`` / ``calc_cond_batch`` (:224-345, :376-395): cfg 1 drops the uncond;
  conds are batched in reverse order (uncond first) when they can be concatenated
  (``can_concat_cond`` :115-141 with comfy/conds.py: tensors of one shape, anything else only
  when equal) and, when memory is short, run in separate calls; each call's
  ``transformer_options`` gets ``cond_or_uncond``, ``uuids`` and
  ``sigmas`` (the x batch's sigma); ``cfg_function`` combines uncond + (cond - uncond) * cfg;
* comfy/model_base.py ``_apply_model`` (:166-205) with comfy/model_sampling.py CONST and
  ModelSamplingDiscreteFlow: timestep = sigma * multiplier, denoised = x - sigma * v,
  noise_scaling / inverse_noise_scaling, time_snr_shift for the schedule;
* the samplers of comfy/k_diffusion/sampling.py (k_samplers.py), given a KSAMPLER-like object
  (comfy/samplers.py :977-1005) and called with the guided model and ``extra_args``;
* v0.30.0's multi-GPU work units (``calc_cond_batch_multigpu``);
* KSamplerAdvanced's step slicing ``sigmas[start_step:last_step + 1]`` (comfy/samplers.py:1141-1163).
"""

from __future__ import annotations

import math
import threading
import uuid
from dataclasses import dataclass, field

import torch
from torch import nn

from . import model_management
from .k_samplers import KSampler
from .model_sampling import ModelSamplingDiscreteFlow, time_snr_shift
from .patcher import ModelPatcher, WrappersMP, WrapperExecutor, copy_nested_dicts, get_all_wrappers

class FlowModel(nn.Module):
    """The BaseModel around a diffusion model that predicts the flow velocity."""

    manual_cast_dtype = None  # comfy/model_base.py:130: weights in their compute dtype
    memory_usage_factor = 1.0  # :155

    def __init__(self, diffusion_model: nn.Module, multiplier: float = 1.0, shift: float = 1.0) -> None:
        super().__init__()
        self.diffusion_model = diffusion_model
        self.multiplier = multiplier  # ModelSamplingDiscreteFlow: Flux 1.0, Wan 1000
        self.model_sampling = ModelSamplingDiscreteFlow(shift, multiplier)  # model_base.py:105 (model_sampling)

    def get_dtype(self) -> torch.dtype:
        """model_base.py:205-206 (the diffusion model's dtype: its weights')."""
        return next(self.diffusion_model.parameters()).dtype

    def memory_required(self, input_shape, cond_shapes={}) -> float:
        """model_base.py:354-378 without flash attention: activation bytes ComfyUI plans for a batch."""
        area = input_shape[0] * math.prod(input_shape[2:])
        return (area * 0.15 * self.memory_usage_factor) * (1024 * 1024)

    def apply_model(self, x: torch.Tensor, sigma: torch.Tensor, transformer_options: dict | None = None, **cond) -> torch.Tensor:
        """Through the APPLY_MODEL wrappers, the BaseModel as ``class_obj`` (model_base.py:159-164 at
        v0.3.64, :195-200 at v0.30.0); TorchCompileModel's wrapper swaps ``diffusion_model`` there."""
        transformer_options = transformer_options or {}
        return WrapperExecutor.new_class_executor(
            self._apply_model, self, get_all_wrappers(WrappersMP.APPLY_MODEL, transformer_options)
        ).execute(x, sigma, transformer_options, **cond)

    def _apply_model(self, x: torch.Tensor, sigma: torch.Tensor, transformer_options: dict, **cond) -> torch.Tensor:
        xc = x
        latent_shapes = cond.pop("latent_shapes", None)
        if latent_shapes is not None:  # v0.30.0 model_base.py:232-233: LTX-2 gets [video, audio]
            xc = unpack_latents(x, latent_shapes)
        v = self.diffusion_model(xc, sigma * self.multiplier, transformer_options=transformer_options or {}, **cond)
        if not torch.is_tensor(v):  # :240-241
            v, _ = pack_latents(v)
        return x - sigma.view(-1, *[1] * (x.ndim - 1)) * v


def pack_latents(latents: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Size]]:
    """Several latents as one ``[B, 1, N]`` tensor (comfy/utils.py:1374-1382 at v0.30.0)."""
    return torch.cat([t.reshape(t.shape[0], 1, -1) for t in latents], dim=-1), [t.shape for t in latents]


def unpack_latents(combined: torch.Tensor, latent_shapes: list) -> list[torch.Tensor]:
    """The inverse of ``pack_latents`` (comfy/utils.py:1384-1394); one shape gives ``[combined]``."""
    if len(latent_shapes) <= 1:
        return [combined]
    parts = []
    for shape in latent_shapes:
        cut = math.prod(shape[1:])
        parts.append(combined[:, :, :cut].reshape(combined.shape[0], *shape[1:]))
        combined = combined[:, :, cut:]
    return parts


def flow_sigmas(steps: int, shift: float = 1.0) -> torch.Tensor:
    """A uniform schedule bent by the flow shift (model_sampling.py time_snr_shift), ending at 0."""
    return time_snr_shift(shift, torch.linspace(1.0, 0.0, steps + 1))


@dataclass
class Cond:
    """One conditioning entry: model keyword inputs with batch 1 (repeated to the latent batch)."""

    inputs: dict
    uuid: uuid.UUID = field(default_factory=uuid.uuid4)

    def batched(self, batch: int) -> dict:
        """Batch-1 tensors repeated to the latent batch; lists of tensors (reference latents) each
        repeated too, as comfy/conds.py CONDList.process_cond does (:98-107 at v0.3.64)."""

        def repeat(v):
            return v.expand(batch, *v.shape[1:]) if isinstance(v, torch.Tensor) and v.shape[0] == 1 else v

        return {
            k: [repeat(t) for t in v] if isinstance(v, list) and v and isinstance(v[0], torch.Tensor) else repeat(v)
            for k, v in self.inputs.items()
        }

    def raw(self) -> dict:
        """The entry as a sampler holds it before its conds are processed (comfy/sampler_helpers.py:57-67
        ``convert_cond``): the text embedding as ``cross_attn``, reference latents as the
        ReferenceLatent node sets them (comfy_extras/nodes_edit_model.py)."""
        raw = {"uuid": self.uuid}
        if "context" in self.inputs:
            raw["cross_attn"] = self.inputs["context"]
        if "ref_latents" in self.inputs:
            raw["reference_latents"] = list(self.inputs["ref_latents"])
        return raw


def estimate_memory(model: ModelPatcher, noise_shape, conds: dict) -> tuple[float, float]:
    """comfy/sampler_helpers.py:109-123 (v0.30.0 :165-179): the batch of cond and uncond, and one
    (these models have no conds that count, so ``cond_shapes`` stays empty)."""
    memory_required = model.model.memory_required([noise_shape[0] * 2] + list(noise_shape[1:]), cond_shapes={})
    minimum_memory_required = model.model.memory_required([noise_shape[0]] + list(noise_shape[1:]), cond_shapes={})
    return memory_required, minimum_memory_required


def prepare_sampling(model: ModelPatcher, noise_shape, conds: dict, model_options: dict):
    """sampler_helpers.py:125-130 (v0.30.0 :181-186): ``_prepare_sampling`` through the PREPARE_SAMPLING wrappers."""
    executor = WrapperExecutor.new_executor(
        _prepare_sampling, get_all_wrappers(WrappersMP.PREPARE_SAMPLING, model_options, is_model_options=True)
    )
    return executor.execute(model, noise_shape, conds, model_options=model_options)


def _prepare_sampling(model: ModelPatcher, noise_shape, conds: dict, model_options: dict | None = None):
    """sampler_helpers.py:132-139 (v0.30.0 :188-204), with no additional models to load."""
    memory_required, minimum_memory_required = estimate_memory(model, noise_shape, conds)
    model_management.load_models_gpu([model], memory_required=memory_required,
                                     minimum_memory_required=minimum_memory_required)
    return model.model, conds, []


def _cat_inputs(inputs: list[dict]) -> dict:
    merged = {}
    for key, value in inputs[0].items():
        if isinstance(value, torch.Tensor):
            merged[key] = torch.cat([c[key] for c in inputs])
        elif isinstance(value, list) and value and isinstance(value[0], torch.Tensor):  # e.g. Kontext ref_latents
            merged[key] = [torch.cat([c[key][i] for c in inputs]) for i in range(len(value))]
        else:
            merged[key] = value
    return merged


def _is_equal(a, b) -> bool:
    """How ``CONDConstant.can_concat`` compares (comfy/conds.py:86-89 at v0.3.64 with ``!=``; v0.33.0's
    ``is_equal`` :7-23 compares tensors by value and containers item by item, the same on these inputs)."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_is_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_is_equal(x, y) for x, y in zip(a, b))
    return bool(a == b)


def can_concat(a: Cond, b: Cond) -> bool:
    """Whether two conds may share one model call (comfy/samplers.py ``can_concat_cond``): a tensor
    input needs one shape (``CONDRegular``), a list of tensors the same shapes (``CONDList``), and
    anything else must be equal (``CONDConstant``). MiniMax H3 gives every cond its own packed
    layout object, so its cond and uncond always run as separate calls."""
    if a.inputs.keys() != b.inputs.keys():
        return False
    for key, value in a.inputs.items():
        other = b.inputs[key]
        if isinstance(value, torch.Tensor):
            if not isinstance(other, torch.Tensor) or value.shape != other.shape:
                return False
        elif isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
            if len(value) != len(other) or any(x.shape != y.shape for x, y in zip(value, other)):
                return False
        elif not _is_equal(value, other):
            return False
    return True


def calc_cond_batch(model: FlowModel, conds: list[Cond | None], x: torch.Tensor, sigma: torch.Tensor,
                    model_options: dict, separate: bool = False) -> list[torch.Tensor | None]:
    """Denoised predictions per cond; cond index 0 = positive, 1 = negative (cond_or_uncond)."""
    if "multigpu_clones" in model_options:  # v0.30.0 comfy/samplers.py:225-226
        return calc_cond_batch_multigpu(conds, x, sigma, model_options)
    to_run = [index for index, cond in enumerate(conds) if cond is not None]
    to_run.reverse()  # comfy/samplers.py:260: the uncond goes first
    batches = []
    while to_run:  # :252-260: each call takes the conds that concatenate with the first one left
        batch = [to_run[0]] if separate else [i for i in to_run if can_concat(conds[i], conds[to_run[0]])]
        batches.append(batch)
        to_run = [i for i in to_run if i not in batch]
    out: list[torch.Tensor | None] = [None] * len(conds)
    for batch in batches:
        options = copy_nested_dicts(model_options.get("transformer_options", {}))
        options["cond_or_uncond"] = batch[:]
        options["uuids"] = [conds[i].uuid for i in batch]
        options["sigmas"] = sigma
        inputs = _cat_inputs([conds[i].batched(x.shape[0]) for i in batch])
        result = model.apply_model(torch.cat([x] * len(batch)), torch.cat([sigma] * len(batch)), options, **inputs)
        for index, chunk in zip(batch, result.chunk(len(batch))):
            out[index] = chunk
    return out


def calc_cond_batch_multigpu(conds: list[Cond | None], x: torch.Tensor, sigma: torch.Tensor,
                             model_options: dict) -> list[torch.Tensor | None]:
    """Multi-GPU work units, v0.30.0 comfy/samplers.py:358-560 (``_calc_cond_batch_multigpu``).

    The conds are dealt out over the devices of ``model_options["multigpu_clones"]`` (at most
    ceil(conds / devices) per device, :402-403), and each device's batch runs on its own thread
    (comfy/multigpu.py MultiGPUThreadPool) through that device's clone of the patched model, with
    inputs and ``sample_sigmas`` moved to the device and ``multigpu_thread_device`` set (:474-505).
    Outputs come back to the input's device.
    """
    clones = model_options["multigpu_clones"]
    devices = list(clones)
    to_run = [index for index, cond in enumerate(conds) if cond is not None]
    per_device = max(1, math.ceil(len(to_run) / len(devices)))
    work = {device: to_run[n * per_device : (n + 1) * per_device] for n, device in enumerate(devices)}
    out: list[torch.Tensor | None] = [None] * len(conds)
    errors: list[BaseException] = []

    def handle_batch(device: torch.device, batch: list[int]) -> None:
        try:
            options = copy_nested_dicts(model_options.get("transformer_options", {}))
            options["cond_or_uncond"] = batch[:]
            options["uuids"] = [conds[i].uuid for i in batch]
            options["sigmas"] = sigma.to(device)
            options["sample_sigmas"] = options["sample_sigmas"].to(device)
            options["multigpu_thread_device"] = device
            inputs = _cat_inputs([conds[i].batched(x.shape[0]) for i in batch])
            inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
            with torch.no_grad():
                result = clones[device].model.apply_model(
                    torch.cat([x] * len(batch)).to(device), torch.cat([sigma] * len(batch)).to(device), options, **inputs
                )
            for index, chunk in zip(batch, result.to(x.device).chunk(len(batch))):
                out[index] = chunk
        except BaseException as error:  # re-raised on the sampling thread, as get_result does (:540-545)
            errors.append(error)

    threads = [threading.Thread(target=handle_batch, args=(device, batch)) for device, batch in work.items() if batch]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return out


def cfg_function(model: FlowModel, cond_pred: torch.Tensor, uncond_pred: torch.Tensor, cond_scale: float,
                 x: torch.Tensor, sigma: torch.Tensor, model_options: dict, cond: Cond, uncond: Cond | None) -> torch.Tensor:
    """comfy/samplers.py:360-373 (v0.30.0 :592-605): CFG, then every post-CFG function in turn, each
    given the model, the positive cond, both predictions and the sampler's model_options (which
    SkipLayerGuidanceDiT copies to make its own extra call). At cfg 1 ComfyUI's uncond prediction is
    zeros, so ``0 + (cond - 0) * 1`` is the cond prediction, as here."""
    cfg_result = uncond_pred + (cond_pred - uncond_pred) * cond_scale
    for fn in model_options.get("sampler_post_cfg_function", []):
        args = {"denoised": cfg_result, "cond": cond, "uncond": uncond, "cond_scale": cond_scale, "model": model,
                "uncond_denoised": uncond_pred, "cond_denoised": cond_pred, "sigma": sigma,
                "model_options": model_options, "input": x}
        cfg_result = fn(args)
    return cfg_result


class CFGGuider:
    def __init__(self, patcher: ModelPatcher, positive: Cond, negative: Cond | None = None, cfg: float = 1.0,
                 separate_conds: bool = False) -> None:
        self.model_patcher = patcher
        self.model_options = patcher.model_options
        self.positive, self.negative, self.cfg = positive, negative, cfg
        self.separate_conds = separate_conds

    def sample(self, noise: torch.Tensor, latent: torch.Tensor, sampler: str, sigmas: torch.Tensor, callback=None,
               seed: int | None = None) -> torch.Tensor:
        original_options = self.model_options
        try:
            self.model_options = copy_nested_dicts(self.model_options)
            wrappers = self.model_options["transformer_options"].setdefault("wrappers", {})
            for kind, by_key in self.model_patcher.wrappers.items():
                for key, found in by_key.items():
                    wrappers.setdefault(kind, {}).setdefault(key, []).extend(found)
            executor = WrapperExecutor.new_class_executor(
                self.outer_sample, self, get_all_wrappers(WrappersMP.OUTER_SAMPLE, self.model_options, is_model_options=True)
            )
            with self.model_patcher.objects_patched():  # the model loaded with its object patches
                return executor.execute(noise, latent, KSampler(sampler), sigmas, callback, seed)
        finally:
            self.model_options = original_options

    def outer_sample(self, noise, latent, sampler: KSampler, sigmas, callback=None, seed=None):
        conds = {"positive": [self.positive.raw()], "negative": [] if self.negative is None else [self.negative.raw()]}
        prepare_sampling(self.model_patcher, noise.shape, conds, self.model_options)
        options = copy_nested_dicts(self.model_options)
        options["transformer_options"]["sample_sigmas"] = sigmas
        x = sigmas[0] * noise + (1 - sigmas[0]) * latent  # CONST.noise_scaling
        x = sampler.sampler_function(self.outer_predict_noise, x, sigmas, {"model_options": options, "seed": seed},
                                     callback)
        return x / (1 - sigmas[-1])  # CONST.inverse_noise_scaling

    def outer_predict_noise(self, x: torch.Tensor, sigma: torch.Tensor, model_options: dict,
                            seed: int | None = None) -> torch.Tensor:
        """comfy/samplers.py ``CFGGuider.outer_predict_noise`` (v0.33.0 :1210-1215): the PREDICT_NOISE
        wrappers of the guider's options around ``predict_noise``."""
        return WrapperExecutor.new_class_executor(
            self.predict_noise, self, get_all_wrappers(WrappersMP.PREDICT_NOISE, self.model_options, is_model_options=True)
        ).execute(x, sigma, model_options, seed)

    def predict_noise(self, x: torch.Tensor, sigma: torch.Tensor, model_options: dict,
                      seed: int | None = None) -> torch.Tensor:
        """comfy/samplers.py ``sampling_function`` (:372-395 at v0.3.64): at cfg 1 the uncond is not run
        unless a sampler turned that shortcut off, and its prediction is then zeros (``calc_cond_batch``
        starts every cond's output at zeros)."""
        model = self.model_patcher.model
        shortcut = math.isclose(self.cfg, 1.0) and not model_options.get("disable_cfg1_optimization", False)
        negative = None if shortcut else self.negative
        cond, uncond = calc_cond_batch(model, [self.positive, negative], x, sigma, model_options, self.separate_conds)
        uncond = torch.zeros_like(cond) if uncond is None else uncond
        return cfg_function(model, cond, uncond, self.cfg, x, sigma, model_options, self.positive, negative)


@torch.no_grad()
def sample(patcher: ModelPatcher, noise: torch.Tensor, positive: Cond, negative: Cond | None = None, *,
           cfg: float = 1.0, steps: int = 8, sampler: str = "euler", shift: float | None = None, start_step: int = 0,
           last_step: int | None = None, latent: torch.Tensor | None = None, separate_conds: bool = False,
           callback=None, seed: int | None = None) -> torch.Tensor:
    """KSampler / KSamplerAdvanced in one call: the final latent of one sampling run; ``seed`` is the
    KSampler's, which stochastic samplers draw their fresh noise from. The schedule's shift is the
    model's own (its model sampling) unless ``shift`` says otherwise."""
    shift = patcher.model.model_sampling.shift if shift is None else shift
    sigmas = flow_sigmas(steps, shift)[start_step : (last_step + 1 if last_step is not None else None)]
    latent = torch.zeros_like(noise) if latent is None else latent
    guider = CFGGuider(patcher, positive, negative, cfg, separate_conds)
    return guider.sample(noise, latent, sampler, sigmas, callback, seed)
