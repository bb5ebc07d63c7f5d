"""SkipLayerGuidanceDiT, as ComfyUI runs it: an extra model call per step, made after CFG.

Mirrors comfy_extras/nodes_slg.py ``SkipLayerGuidanceDiT.execute`` (:37-86 at v0.3.64 a125cd84;
the same lines at v0.30.0 b1693ecb). The node installs no block patch on the model. It adds a
post-CFG function (:84, model_patcher.py set_model_sampler_post_cfg_function) that, inside
its sigma window (:43-44, :72-73), copies the sampler's model_options (:62), sets a skip
patch on each chosen block of that copy only (:64-68, set_model_options_patch_replace), and
calls ``calc_cond_batch(model, [cond], ...)`` with the positive cond (:74): so the extra call
carries the positive cond's uuid and cond_or_uncond [0], and whatever block patches another
node put on those keys are replaced for that call only. The result pushes the CFG result away
from the skip-layer prediction (:75-79).
"""

from __future__ import annotations

from .patcher import ModelPatcher, set_model_options_patch_replace
from .sampling import calc_cond_batch


def skip_layer_guidance(model: ModelPatcher, scale: float = 3.0, start_percent: float = 0.01, end_percent: float = 0.15,
                        double_layers: tuple[int, ...] = (), single_layers: tuple[int, ...] = (),
                        rescaling_scale: float = 0.0) -> ModelPatcher:
    """The node's output model."""

    def skip(args, extra_args):  # :39-40
        return args

    model_sampling = model.get_model_object("model_sampling")  # :42-44
    sigma_start, sigma_end = model_sampling.percent_to_sigma(start_percent), model_sampling.percent_to_sigma(end_percent)
    if not double_layers and not single_layers:  # :52-53
        return model

    def post_cfg_function(args):  # :55-81
        inner_model, cond_pred, cond = args["model"], args["cond_denoised"], args["cond"]
        cfg_result, sigma, x = args["denoised"], args["sigma"], args["input"]
        model_options = args["model_options"].copy()
        for layer in double_layers:
            model_options = set_model_options_patch_replace(model_options, skip, "dit", "double_block", layer)
        for layer in single_layers:
            model_options = set_model_options_patch_replace(model_options, skip, "dit", "single_block", layer)
        sigma_ = sigma[0].item()
        if scale > 0 and sigma_end <= sigma_ <= sigma_start:
            (slg,) = calc_cond_batch(inner_model, [cond], x, sigma, model_options)
            cfg_result = cfg_result + (cond_pred - slg) * scale
            if rescaling_scale != 0:
                factor = cond_pred.std() / cfg_result.std()
                cfg_result *= rescaling_scale * factor + (1 - rescaling_scale)
        return cfg_result

    patched = model.clone()
    patched.set_model_sampler_post_cfg_function(post_cfg_function)
    return patched
