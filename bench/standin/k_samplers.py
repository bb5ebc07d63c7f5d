"""The samplers of comfy/k_diffusion/sampling.py that the benchmark and the tests run, on CONST (flow) models.

Each is called as ComfyUI's KSAMPLER calls them (comfy/samplers.py :977-1005 at v0.33.0 2f35f4a0):
``sampler_function(model, x, sigmas, extra_args, callback)``, and evaluates the guided model as
``model(x, sigma, **extra_args)``. ``extra_args`` carries ``model_options``, which the CFG++ samplers
copy to append a post-CFG function that keeps the uncond prediction (``set_model_options_post_cfg_function``,
comfy/model_patcher.py:114-118 with ``disable_cfg1_optimization``), and the KSampler's ``seed``, which
the stochastic ones draw their fresh noise from. The callback gets ``(i, x)``.

Line numbers are comfy/k_diffusion/sampling.py at v0.33.0 (v0.3.64 has the first three at the lines
their docstrings give). The model sampling is CONST: ``sigma_to_half_log_snr`` is ``-logit(sigma)``
(:152-157), so a CFG++ step's ``alpha`` is ``1 - sigma``, and ``noise_scale`` is 1.
"""

from __future__ import annotations

import torch


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """:63-65."""
    return (x - denoised) / sigma


def get_ancestral_step(sigma_from, sigma_to, eta: float = 1.0):
    """:68-75."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def default_noise_sampler(x: torch.Tensor, seed: int | None = None):
    """:75-82 at v0.3.64: one generator seeded with the KSampler's seed (v0.33.0 :78-86 seeds a CPU
    generator with ``seed + 1``: another draw, the same process)."""
    generator = None
    if seed is not None:
        generator = torch.Generator(device=x.device)
        generator.manual_seed(seed)
    return lambda sigma, sigma_next: torch.randn(x.size(), dtype=x.dtype, layout=x.layout, device=x.device, generator=generator)


def keep_uncond(extra_args: dict) -> dict:
    """What every CFG++ sampler does first: a copy of the model options with a post-CFG function that
    keeps the uncond prediction (and the cfg-1 shortcut off, so there is one). Returns the holder."""
    kept: dict = {}

    def post_cfg_function(args):
        kept["uncond"] = args["uncond_denoised"]
        return args["denoised"]

    options = dict(extra_args.get("model_options", {}))
    options["sampler_post_cfg_function"] = options.get("sampler_post_cfg_function", []) + [post_cfg_function]
    options["disable_cfg1_optimization"] = True
    extra_args["model_options"] = options
    return kept


def _ones(x: torch.Tensor) -> torch.Tensor:
    return x.new_ones(x.shape[0])


def sample_euler(model, x, sigmas, extra_args=None, callback=None):
    """:190-212 (v0.3.64 :184-206), without churn: the callback (KSampler's preview, progress bar and
    interrupt check) runs after the step's model call, with x before the update."""
    extra_args = extra_args or {}
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * _ones(x), **extra_args)
        if callback is not None:
            callback(i, x)
        x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    return x


def sample_heun(model, x, sigmas, extra_args=None, callback=None):
    """:269-301 (v0.3.64 :262-295): the callback runs after the first model call of a step, before the second."""
    extra_args = extra_args or {}
    for i in range(len(sigmas) - 1):
        d = to_d(x, sigmas[i], model(x, sigmas[i] * _ones(x), **extra_args))
        if callback is not None:
            callback(i, x)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1] * _ones(x), **extra_args))
            x = x + (d + d_2) / 2 * dt
    return x


def sample_euler_ancestral(model, x, sigmas, extra_args=None, callback=None, eta: float = 1.0, s_noise: float = 1.0):
    """``sample_euler_ancestral`` on a CONST model, which ComfyUI hands to ``sample_euler_ancestral_RF``
    (:240-264; v0.3.64 :234-257): step down to ``sigma_down`` along the denoised direction, then re-noise
    to the next sigma with fresh noise, so every model call sees new noise."""
    extra_args = extra_args or {}
    noise_sampler = default_noise_sampler(x, extra_args.get("seed"))
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * _ones(x), **extra_args)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            downstep_ratio = 1 + (sigmas[i + 1] / sigmas[i] - 1) * eta
            sigma_down = sigmas[i + 1] * downstep_ratio
            alpha_ip1, alpha_down = 1 - sigmas[i + 1], 1 - sigma_down
            renoise_coeff = (sigmas[i + 1] ** 2 - sigma_down**2 * alpha_ip1**2 / alpha_down**2) ** 0.5
            sigma_down_i_ratio = sigma_down / sigmas[i]
            x = sigma_down_i_ratio * x + (1 - sigma_down_i_ratio) * denoised
            if eta > 0:
                x = (alpha_ip1 / alpha_down) * x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * renoise_coeff
        if callback is not None:
            callback(i, x)
    return x


def sample_euler_ancestral_cfg_pp(model, x, sigmas, extra_args=None, callback=None, eta: float = 1.0, s_noise: float = 1.0):
    """:1266-1308: DDIM steps that take the guided prediction at the next step's signal level ``alpha``
    and the noise from the uncond prediction."""
    extra_args = dict(extra_args or {})
    noise_sampler = default_noise_sampler(x, extra_args.get("seed"))
    kept = keep_uncond(extra_args)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * _ones(x), **extra_args)
        if callback is not None:
            callback(i, x)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            alpha_s, alpha_t = 1 - sigmas[i], 1 - sigmas[i + 1]
            d = to_d(x, sigmas[i], alpha_s * kept["uncond"])
            sigma_down, sigma_up = get_ancestral_step(sigmas[i] / alpha_s, sigmas[i + 1] / alpha_t, eta=eta)
            sigma_down = alpha_t * sigma_down
            x = alpha_t * denoised + sigma_down * d
            if eta > 0 and s_noise > 0:
                x = x + alpha_t * noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def sample_euler_cfg_pp(model, x, sigmas, extra_args=None, callback=None):
    """:1311-1313."""
    return sample_euler_ancestral_cfg_pp(model, x, sigmas, extra_args, callback, eta=0.0, s_noise=0.0)


def sample_dpmpp_2s_ancestral_cfg_pp(model, x, sigmas, extra_args=None, callback=None, eta: float = 1.0, s_noise: float = 1.0):
    """:1317-1358 (no CONST variant: the same exponential steps in sigma as for EPS models)."""
    extra_args = dict(extra_args or {})
    noise_sampler = default_noise_sampler(x, extra_args.get("seed"))
    kept = keep_uncond(extra_args)
    sigma_fn, t_fn = (lambda t: t.neg().exp()), (lambda sigma: sigma.log().neg())
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * _ones(x), **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        if callback is not None:
            callback(i, x)
        if sigma_down == 0:
            x = denoised + to_d(x, sigmas[i], kept["uncond"]) * sigma_down
        else:
            t, t_next = t_fn(sigmas[i]), t_fn(sigma_down)
            h = t_next - t
            s = t + h / 2
            x_2 = (sigma_fn(s) / sigma_fn(t)) * (x + (denoised - kept["uncond"])) - (-h / 2).expm1() * denoised
            denoised_2 = model(x_2, sigma_fn(s) * _ones(x), **extra_args)
            x = (sigma_fn(t_next) / sigma_fn(t)) * (x + (denoised - kept["uncond"])) - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def sample_dpmpp_2m_cfg_pp(model, x, sigmas, extra_args=None, callback=None):
    """:1361-1391."""
    extra_args = dict(extra_args or {})
    kept = keep_uncond(extra_args)
    t_fn = lambda sigma: sigma.log().neg()  # noqa: E731
    old_uncond = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * _ones(x), **extra_args)
        if callback is not None:
            callback(i, x)
        uncond = kept["uncond"]
        t, t_next = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
        h = t_next - t
        if old_uncond is None or sigmas[i + 1] == 0:
            mix = -torch.exp(-h) * uncond
        else:
            r = (t - t_fn(sigmas[i - 1])) / h
            mix = -torch.exp(-h) * uncond - torch.expm1(-h) * (1 / (2 * r)) * (denoised - old_uncond)
        x = denoised + mix + torch.exp(-h) * x
        old_uncond = uncond
    return x


def res_multistep(model, x, sigmas, extra_args=None, callback=None, s_noise: float = 1.0, eta: float = 1.0,
                  cfg_pp: bool = False):
    """:1394-1456."""
    extra_args = dict(extra_args or {})
    noise_sampler = default_noise_sampler(x, extra_args.get("seed"))
    kept = keep_uncond(extra_args) if cfg_pp else None
    sigma_fn, t_fn = (lambda t: t.neg().exp()), (lambda sigma: sigma.log().neg())
    phi1_fn = lambda t: torch.expm1(t) / t  # noqa: E731
    phi2_fn = lambda t: (phi1_fn(t) - 1.0) / t  # noqa: E731
    old_sigma_down = old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * _ones(x), **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        if callback is not None:
            callback(i, x)
        if sigma_down == 0 or old_denoised is None:
            if cfg_pp:
                x = denoised + to_d(x, sigmas[i], kept["uncond"]) * sigma_down
            else:
                x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_old, t_next, t_prev = t_fn(sigmas[i]), t_fn(old_sigma_down), t_fn(sigma_down), t_fn(sigmas[i - 1])
            h = t_next - t
            c2 = (t_prev - t_old) / h
            phi1_val, phi2_val = phi1_fn(-h), phi2_fn(-h)
            b1 = torch.nan_to_num(phi1_val - phi2_val / c2, nan=0.0)
            b2 = torch.nan_to_num(phi2_val / c2, nan=0.0)
            if cfg_pp:
                x = x + (denoised - kept["uncond"])
                x = sigma_fn(h) * x + h * (b1 * kept["uncond"] + b2 * old_denoised)
            else:
                x = sigma_fn(h) * x + h * (b1 * denoised + b2 * old_denoised)
        if sigma_up > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
        old_denoised = kept["uncond"] if cfg_pp else denoised
        old_sigma_down = sigma_down
    return x


def sample_res_multistep_cfg_pp(model, x, sigmas, extra_args=None, callback=None):
    """:1463-1464."""
    return res_multistep(model, x, sigmas, extra_args, callback, eta=0.0, cfg_pp=True)


def sample_res_multistep_ancestral_cfg_pp(model, x, sigmas, extra_args=None, callback=None):
    """:1471-1472."""
    return res_multistep(model, x, sigmas, extra_args, callback, eta=1.0, cfg_pp=True)


def sample_gradient_estimation_cfg_pp(model, x, sigmas, extra_args=None, callback=None, ge_gamma: float = 2.0):
    """:1476-1521 with ``cfg_pp``."""
    extra_args = dict(extra_args or {})
    kept = keep_uncond(extra_args)
    old_d = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * _ones(x), **extra_args)
        d = to_d(x, sigmas[i], kept["uncond"])
        if callback is not None:
            callback(i, x)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = denoised + d * sigmas[i + 1]
            if i >= 1:
                x = x + (ge_gamma - 1) * (d - old_d) * dt
        old_d = d
    return x


SAMPLERS = {fn.__name__.removeprefix("sample_"): fn for fn in (
    sample_euler, sample_heun, sample_euler_ancestral, sample_euler_cfg_pp, sample_euler_ancestral_cfg_pp,
    sample_dpmpp_2s_ancestral_cfg_pp, sample_dpmpp_2m_cfg_pp, sample_res_multistep_cfg_pp,
    sample_res_multistep_ancestral_cfg_pp, sample_gradient_estimation_cfg_pp,
)}
# Every CFG++ sampler of comfy/samplers.py KSAMPLER_NAMES (:971-975 at v0.33.0).
CFG_PP = tuple(name for name in SAMPLERS if name.endswith("_cfg_pp"))


class KSampler:
    """comfy/samplers.py KSAMPLER (:977-1005): the sampler object OUTER_SAMPLE wrappers receive,
    holding its sampler function."""

    def __init__(self, name: str) -> None:
        if name not in SAMPLERS:
            raise ValueError(f"unknown sampler {name!r}; the stand-in has {sorted(SAMPLERS)}.")
        self.sampler_function = SAMPLERS[name]
