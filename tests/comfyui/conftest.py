"""Real-ComfyUI tier: boots ComfyUI in-process and loads this pack through its own custom-node loader.

The CI tier checks the node against stand-in models; only a real ComfyUI shows that the
pack survives ComfyUI's loader, model detection, samplers and executor. The tier is
skipped unless ``$COMFYUI_PATH`` points at a ComfyUI checkout, and nothing from ComfyUI is
imported before that check, so the default CI collects this folder without errors.

Run it in its own pytest process (``pytest tests/comfyui``): ComfyUI's top-level modules
(``nodes``, ``utils``, ``comfy``) must be the checkout's, not stand-ins other tests may
have put into ``sys.modules``.

Everything the tier writes goes to pytest's temporary directories: models, the
``custom_nodes`` folder that links to this repository, and ComfyUI's output, input,
temp and user folders.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # torch and ComfyUI are imported only once the tier is known to run
    import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
HARNESS_NODES = Path(__file__).with_name("harness_nodes.py")
# The folder name ComfyUI sees for the pack, as after `git clone ... custom_nodes/cgtaylor-cache`.
PACK_FOLDER_NAME = "cgtaylor-cache"
CLIENT_ID = "cgtaylor-real-tier"
COMFYUI_ARGV = ["main.py", "--cpu", "--disable-api-nodes"]

# Tiny random models (comfyui.md B2). The Wan one keeps the widths that ComfyUI's detection
# derives from a state dict (dim a multiple of 128, text_dim 4096), so UNETLoader loads it.
TINY_WAN21_T2V = {
    "image_model": "wan2.1", "model_type": "t2v", "patch_size": (1, 2, 2), "text_len": 512,
    "in_dim": 16, "dim": 128, "ffn_dim": 256, "freq_dim": 256, "text_dim": 4096, "out_dim": 16,
    "num_heads": 1, "num_layers": 4, "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6,
}
# Flux detection hard-codes hidden size 3072, so this one is built in code, not loaded.
TINY_FLUX = {
    "image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": 768, "context_in_dim": 4096,
    "hidden_size": 64, "mlp_ratio": 4.0, "num_heads": 4, "depth": 2, "depth_single_blocks": 4,
    "axes_dim": [4, 6, 6], "theta": 10000, "patch_size": 2, "qkv_bias": True, "guidance_embed": True,
}
# FluxParams fields newer ComfyUI releases require, with their FLUX.1 values (see tiny_flux_config).
FLUX1_NEWER_FIELDS = {"txt_ids_dims": []}
# A family the node does not support (Lumina 2 / NextDiT has no `dit` block hooks).
TINY_LUMINA2 = {
    "image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 64, "n_layers": 2, "n_refiner_layers": 1,
    "n_heads": 2, "n_kv_heads": 2, "multiple_of": 16, "cap_feat_dim": 32, "axes_dims": [8, 12, 12],
    "axes_lens": [1, 64, 64], "qk_norm": True,
}
TINY_WAN_FILE = "cgtaylor-tiny-wan21-t2v.safetensors"


def comfyui_checkout() -> tuple[Path | None, str]:
    """The checkout named by $COMFYUI_PATH, or None and the reason the tier is skipped."""
    raw = os.environ.get("COMFYUI_PATH", "").strip()
    if not raw:
        return None, (
            "real-ComfyUI tier skipped: set COMFYUI_PATH to a ComfyUI checkout "
            "(and run with a Python that has ComfyUI's requirements) to run it"
        )
    root = Path(raw).expanduser().resolve()
    needed = ("main.py", "nodes.py", "execution.py", "server.py", "folder_paths.py", "comfy")
    missing = [name for name in needed if not (root / name).exists()]
    if missing:
        return None, f"real-ComfyUI tier skipped: COMFYUI_PATH={raw} is not a ComfyUI checkout (missing {missing})"
    return root, ""


RECORD_ENV = "CGTAYLOR_RECORD_TIER"
RECORDS = REPO_ROOT / "tests" / "comfyui" / "results"
COLLECTED_AT = time.monotonic()  # conftests load as the session starts


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """With ``$CGTAYLOR_RECORD_TIER`` set, a whole run of the tier leaves its outcome in
    ``tests/comfyui/results/<release>.json``: the README's real-tier table is rendered from these
    (``python -m bench.report``), so its counts are what a run wrote, never typed."""
    root, _ = comfyui_checkout()
    if not os.environ.get(RECORD_ENV) or root is None:
        return
    import platform

    import torch

    version = (root / "comfyui_version.py").read_text().split("__version__ =", 1)[1].split()[0].strip("\"'")
    commit = root / ".comfyui-commit"  # written by setup_comfyui.py
    counts = {outcome: len(terminalreporter.stats.get(outcome, [])) for outcome in ("passed", "skipped", "failed", "error")}
    record = {"release": version, "commit": commit.read_text().strip() if commit.is_file() else None, **counts,
              "seconds": round(time.monotonic() - COLLECTED_AT),
              "python": platform.python_version(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    RECORDS.mkdir(exist_ok=True)
    (RECORDS / f"v{version}.json").write_text(json.dumps(record, indent=1) + "\n")
    terminalreporter.write_line(f"recorded the tier's outcome in {RECORDS / f'v{version}.json'}")


@pytest.fixture(scope="session", autouse=True)
def comfyui_root() -> Path:
    """Skips every test of this folder, with the reason, when no checkout is configured."""
    root, reason = comfyui_checkout()
    if root is None:
        pytest.skip(reason)
    return root


@dataclass
class SentEvent:
    """One call of ``PromptServer.instance.send_sync``: what a websocket client would receive."""

    event: str
    data: Any
    sid: str | None


@dataclass
class PromptRun:
    """What one API-format prompt produced."""

    prompt_id: str
    success: bool
    outputs: dict
    status_messages: list
    events: list[SentEvent]
    output_dir: Path
    client_id: str

    def events_named(self, name: str) -> list[SentEvent]:
        return [e for e in self.events if e.event == name]

    def saved_latent(self, node_id: str) -> torch.Tensor:
        """The tensor a stock ``SaveLatent`` node wrote: exact fp32, so outputs compare bit for bit."""
        from safetensors.torch import load_file

        entries = self.outputs[node_id]["latents"]
        assert len(entries) == 1, entries
        entry = entries[0]
        return load_file(str(self.output_dir / entry["subfolder"] / entry["filename"]))["latent_tensor"]


@dataclass
class ComfyRuntime:
    """Handles on the booted ComfyUI modules and the tier's temporary folders."""

    root: Path
    nodes: Any
    execution: Any
    server: Any
    folder_paths: Any
    loop: asyncio.AbstractEventLoop
    dirs: dict[str, Path]
    events: list[SentEvent] = field(default_factory=list)
    loader_results: dict[str, bool] = field(default_factory=dict)
    load_log: list[str] = field(default_factory=list)

    @property
    def pack_path(self) -> Path:
        return self.dirs["custom_nodes"] / PACK_FOLDER_NAME


class _LogCollector(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record.getMessage())


def _refuse_foreign_modules(root: Path) -> None:
    """ComfyUI's modules are top-level names; a stand-in already imported would shadow them silently."""
    for name in ("nodes", "comfy", "comfy_api", "execution", "server", "folder_paths"):
        module = sys.modules.get(name)
        if module is None:
            continue
        # `comfy` has no __init__.py: a namespace package has __path__ but no __file__.
        file = getattr(module, "__file__", None)
        origins = [file] if file else list(getattr(module, "__path__", []))
        if not origins or not all(Path(o).resolve().is_relative_to(root) for o in origins):
            raise RuntimeError(
                f"module {name!r} is already imported from {origins or module!r}, not from {root}: "
                "run the real-ComfyUI tier in its own pytest process (pytest tests/comfyui)"
            )


def _import_comfyui(root: Path, dirs: dict[str, Path]) -> tuple[Any, Any, Any, Any]:
    """Imports ComfyUI the way main.py does (comfyui.md A5, B1 obstacle 3)."""
    _refuse_foreign_modules(root)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    pytest_argv = sys.argv
    sys.argv = list(COMFYUI_ARGV)  # comfy.cli_args parses sys.argv when it is first imported
    try:
        import comfy.options

        comfy.options.enable_args_parsing()
        import comfy.cli_args  # noqa: F401 - importing it parses --cpu
    finally:
        sys.argv = pytest_argv

    import folder_paths

    folder_paths.set_output_directory(str(dirs["output"]))
    folder_paths.set_input_directory(str(dirs["input"]))
    folder_paths.set_temp_directory(str(dirs["temp"]))
    folder_paths.set_user_directory(str(dirs["user"]))
    folder_paths.add_model_folder_path("diffusion_models", str(dirs["diffusion_models"]), is_default=True)
    # Only the temporary folder: packs installed in the checkout must not take part.
    folder_paths.folder_names_and_paths["custom_nodes"] = ([str(dirs["custom_nodes"])], set())

    # main.py's order: `nodes` puts comfy/ first on sys.path, after which `utils` would mean
    # comfy/utils.py and `server` (which needs utils.install_util) would fail to import.
    # isort: off
    import utils.extra_config  # noqa: F401
    import server
    import execution
    import nodes
    # isort: on

    return folder_paths, server, execution, nodes


@pytest.fixture(scope="session")
def comfyui(comfyui_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyRuntime]:
    """ComfyUI booted in this process with the pack loaded from a temporary custom_nodes folder."""
    base = tmp_path_factory.mktemp("comfyui")
    dirs = {name: base / name for name in ("output", "input", "temp", "user", "diffusion_models", "custom_nodes")}
    for path in dirs.values():
        path.mkdir()
    (dirs["custom_nodes"] / PACK_FOLDER_NAME).symlink_to(REPO_ROOT, target_is_directory=True)
    (dirs["custom_nodes"] / "cgtaylor_test_harness_nodes.py").symlink_to(HARNESS_NODES)

    try:
        folder_paths, server, execution, nodes = _import_comfyui(comfyui_root, dirs)
    except ImportError as error:
        raise RuntimeError(
            f"COMFYUI_PATH is set but ComfyUI does not import with {sys.executable} ({error}): "
            "run this tier with a Python that has ComfyUI's requirements installed"
        ) from error

    loop = asyncio.new_event_loop()
    prompt_server = server.PromptServer(loop)  # opens no socket; sets PromptServer.instance
    runtime = ComfyRuntime(comfyui_root, nodes, execution, prompt_server, folder_paths, loop, dirs)

    # Record what the loader returns for each module it loads, built-in extras included
    # (a plain wrapper, restored below).
    original_loader = nodes.load_custom_node

    async def recording_loader(module_path: str, *args: Any, **kwargs: Any) -> bool:
        ok = await original_loader(module_path, *args, **kwargs)
        runtime.loader_results[os.path.basename(module_path)] = ok
        return ok

    collector = _LogCollector(runtime.load_log)
    logging.getLogger().addHandler(collector)
    nodes.load_custom_node = recording_loader
    try:
        loop.run_until_complete(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
    finally:
        nodes.load_custom_node = original_loader
        logging.getLogger().removeHandler(collector)

    original_send_sync = prompt_server.send_sync

    def recording_send_sync(event: str, data: Any, sid: str | None = None) -> None:
        runtime.events.append(SentEvent(event, data, sid))
        original_send_sync(event, data, sid)

    prompt_server.send_sync = recording_send_sync
    try:
        yield runtime
    finally:
        prompt_server.send_sync = original_send_sync
        loop.close()


def new_prompt_executor(comfyui: ComfyRuntime) -> Any:
    """A PromptExecutor with the classic cache, built as main.prompt_worker builds it with --cache-classic.

    v0.30.0 reads ``cache_args["ram"]`` and ``["ram_inactive"]`` on every run (execution.py:745-746)
    and main.py:349 passes them; v0.3.64's executor has no such parameter (execution.py:600).
    """
    executor_class = comfyui.execution.PromptExecutor
    kwargs: dict[str, Any] = {"cache_type": comfyui.execution.CacheType.CLASSIC}
    if "cache_args" in inspect.signature(executor_class.__init__).parameters:
        kwargs["cache_args"] = {"lru": 0, "ram": 0, "ram_inactive": 0}  # main.py:331-332 with --cache-classic
    return executor_class(comfyui.server, **kwargs)


@pytest.fixture(scope="session")
def run_prompt(comfyui: ComfyRuntime) -> Callable[..., PromptRun]:
    """Runs an API-format prompt through validate_prompt and a fresh PromptExecutor (nothing cached between runs).

    ``on_model_loaded(model_patcher)`` is called for every model that ``UNETLoader`` loads,
    so a test can hook the very model the graph samples; the wrapper is removed afterwards.
    """
    import comfy.sd

    def run(prompt: dict, on_model_loaded: Callable[[Any], None] | None = None) -> PromptRun:
        prompt_id = str(uuid.uuid4())
        valid, error, outputs_to_run, node_errors = comfyui.loop.run_until_complete(
            comfyui.execution.validate_prompt(prompt_id, prompt, None)
        )
        assert valid, f"ComfyUI rejected the prompt: {error} {node_errors}"
        first_event = len(comfyui.events)
        executor = new_prompt_executor(comfyui)
        original_load = comfy.sd.load_diffusion_model

        def traced_load(*args: Any, **kwargs: Any) -> Any:
            model = original_load(*args, **kwargs)
            if on_model_loaded is not None:
                on_model_loaded(model)
            return model

        comfy.sd.load_diffusion_model = traced_load
        try:
            executor.execute(prompt, prompt_id, extra_data={"client_id": CLIENT_ID}, execute_outputs=outputs_to_run)
        finally:
            comfy.sd.load_diffusion_model = original_load
        history = getattr(executor, "history_result", None) or {}
        return PromptRun(
            prompt_id=prompt_id,
            success=executor.success,
            outputs=history.get("outputs", {}),
            status_messages=executor.status_messages,
            events=comfyui.events[first_event:],
            output_dir=comfyui.dirs["output"],
            client_id=CLIENT_ID,
        )

    return run


def initialise_weights(module: torch.nn.Module, seed: int) -> None:
    """Gives a freshly built ComfyUI model usable random weights.

    ComfyUI layers skip initialisation (comfy.ops.disable_weight_init), so a new model
    holds whatever memory held. Scales start at 1 and biases at 0, matrices with
    1/sqrt(fan_in), modulations small (comfyui.md B1 obstacle 4): the output then depends
    on the input, so a wrong block skip or cache shows up in the latent.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if "modulation" in name or "_mod." in name:
                values = torch.randn(param.shape, generator=generator) * 0.02
            elif param.ndim >= 2:
                fan_in = param[0].numel()
                values = torch.randn(param.shape, generator=generator) / fan_in**0.5
            elif leaf == "bias":
                values = torch.zeros(param.shape)
            else:  # norm weights; RMSNorm says "scale" on v0.3.64, "weight" on v0.30.0
                values = torch.ones(param.shape)
            param.copy_(values.to(param.dtype))


def build_model(config_class: type, unet_config: dict, seed: int) -> Any:
    """A ComfyUI model (model_base.*) from a supported_models config, in fp32 with initialised weights."""
    import torch

    model_config = config_class(dict(unet_config))
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({})
    initialise_weights(model.diffusion_model, seed)
    return model


def as_model_patcher(model: Any) -> Any:
    """Wraps a built model the way comfy.sd.load_diffusion_model does, so samplers accept it."""
    import comfy.model_management
    import comfy.model_patcher

    return comfy.model_patcher.ModelPatcher(
        model,
        load_device=comfy.model_management.get_torch_device(),
        offload_device=comfy.model_management.unet_offload_device(),
    )


@dataclass
class TinyModelFile:
    name: str  # as UNETLoader lists it
    num_layers: int


@pytest.fixture(scope="session")
def tiny_wan(comfyui: ComfyRuntime) -> TinyModelFile:
    """A tiny random Wan 2.1 T2V saved where the stock UNETLoader finds it."""
    import comfy.supported_models
    import comfy.utils

    model = build_model(comfy.supported_models.WAN21_T2V, TINY_WAN21_T2V, seed=2101)
    path = comfyui.dirs["diffusion_models"] / TINY_WAN_FILE
    comfy.utils.save_torch_file(model.diffusion_model.state_dict(), str(path))
    assert TINY_WAN_FILE in comfyui.folder_paths.get_filename_list("diffusion_models")
    return TinyModelFile(TINY_WAN_FILE, TINY_WAN21_T2V["num_layers"])


def tiny_flux_config() -> dict:
    """TINY_FLUX plus the FluxParams fields this ComfyUI requires that an older one did not have.

    v0.30.0 added the required ``txt_ids_dims`` (comfy/ldm/flux/model.py:37; ``[]`` for FLUX.1,
    comfy/model_detection.py:260); v0.3.64's FluxParams has no such field.
    """
    from comfy.ldm.flux.model import FluxParams

    config = dict(TINY_FLUX)
    for param in dataclasses.fields(FluxParams):
        required = param.default is dataclasses.MISSING and param.default_factory is dataclasses.MISSING
        if param.name in config or not required:
            continue
        if param.name not in FLUX1_NEWER_FIELDS:
            raise RuntimeError(f"FluxParams requires {param.name!r}, unknown to this tier: add its FLUX.1 value")
        config[param.name] = FLUX1_NEWER_FIELDS[param.name]
    return config


@pytest.fixture(scope="session")
def tiny_flux(comfyui: ComfyRuntime) -> Any:
    """A tiny random Flux as a ModelPatcher (ComfyUI's Flux detection cannot load a narrow one)."""
    import comfy.supported_models

    return as_model_patcher(build_model(comfy.supported_models.Flux, tiny_flux_config(), seed=1001))


@pytest.fixture(scope="session")
def tiny_lumina2(comfyui: ComfyRuntime) -> Any:
    """A tiny model of a family the node does not support."""
    import comfy.supported_models

    return as_model_patcher(build_model(comfy.supported_models.Lumina2, TINY_LUMINA2, seed=2002))


class BlockCounter:
    """Counts how often each named module's forward ran, through forward hooks.

    Hooks see real module calls only, so a block that a patch skips is not counted.
    Use as a context manager: the hooks are removed on exit.
    """

    def __init__(self, modules: dict[str, torch.nn.Module]) -> None:
        self.counts = {name: 0 for name in modules}
        self.order: list[str] = []  # every module call in the order it happened
        self._handles = [module.register_forward_hook(self._counter(name)) for name, module in modules.items()]

    def _counter(self, name: str) -> Callable[..., None]:
        def hook(module: Any, args: Any, output: Any) -> None:
            self.counts[name] += 1
            self.order.append(name)

        return hook

    def per_call(self, last_module: str) -> list[list[str]]:
        """The module calls split into model calls, each ending with ``last_module`` (the head)."""
        calls, current = [], []
        for name in self.order:
            current.append(name)
            if name == last_module:
                calls.append(current)
                current = []
        assert not current, f"module calls after the last {last_module}: {current}"
        return calls

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> BlockCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


@pytest.fixture(scope="session")
def block_counter() -> type[BlockCounter]:
    return BlockCounter
