"""The benchmark's two pictures: the speed/fidelity trade-off per method, and samples side by side."""

from __future__ import annotations

import textwrap
from pathlib import Path

import torch

from .digits import decode

COLOURS = {"cg-taylor": "#d62728", "fixed-interval": "#1f77b4", "fbcache": "#2ca02c", "input-change": "#9467bd",
           "dicache": "#ff7f0e"}
NAMES = {"cg-taylor": "CG-Taylor (ours)", "fixed-interval": "TaylorSeer (fixed interval)",
         "fbcache": "First-block cache", "input-change": "Input-change (EasyCache-style)",
         "dicache": "DiCache-style probe alignment"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


NOTE_CHARACTERS = 190  # two lines of 6-point text under a 5.5-inch panel


def _front(points: list[dict]) -> list[dict]:
    """The upper-right envelope: points no other point beats on both block ratio and PSNR."""
    front, best = [], float("-inf")
    for p in sorted(points, key=lambda p: (-p["block_ratio"], -p["psnr"])):
        if p["psnr"] > best:
            front.append(p)
            best = p["psnr"]
    return sorted(front, key=lambda p: p["block_ratio"])


def pareto_plot(report: dict, path: Path) -> None:
    """One panel per model and run (sampler, steps); notes such as the noise diagnosis under the axes."""
    plt = _pyplot()
    panels = [(family, data, run) for family, data in report["families"].items() for run in data["runs"].values()]
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 4.6 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (family, data, run) in zip(axes.flat, panels):
        for method, colour in COLOURS.items():
            points = [p for p in run["points"] if p["method"] == method]
            if not points:
                continue
            ax.scatter([p["block_ratio"] for p in points], [p["psnr"] for p in points], color=colour, alpha=0.35, s=14)
            front = _front(points)
            ax.plot([p["block_ratio"] for p in front], [p["psnr"] for p in front], color=colour, marker="o", ms=4,
                    label=NAMES[method])
        default = run["default"]
        ax.scatter([default["block_ratio"]], [default["psnr"]], marker="*", s=160, color=COLOURS["cg-taylor"],
                   edgecolor="black", zorder=5, label="node default")
        ax.set_title(f"{family}: {data['blocks']} blocks, {run['sampler']} {run['steps']} steps, "
                     f"{report['seeds']} seeds x 10", fontsize=9)
        ax.set_xlabel("block evaluations, times fewer than no cache")
        ax.set_ylabel("PSNR vs no cache (dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        if default["notes"]:  # the first note, in the panel's own width (every note: table_full.md)
            note = textwrap.shorten("node default: " + default["notes"][0], NOTE_CHARACTERS, placeholder=" …")
            ax.text(0.0, -0.2, "\n".join(textwrap.wrap(note, NOTE_CHARACTERS // 2)), transform=ax.transAxes,
                    fontsize=6, va="top")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def samples_plot(report: dict, path: Path) -> None:
    """Per model and run that kept its samples (the fewest and the most euler steps) two rows (no
    cache, CG-Taylor at the node default), one column per digit; Wan shows frame 0."""
    samples = {family: {run: {kind: torch.tensor(latents) for kind, latents in entry["samples"].items()}
                        for run, entry in data["runs"].items() if "samples" in entry}
               for family, data in report["families"].items()}
    rows = [(family, run, kind) for family in samples for run in samples[family] for kind in ("no_cache", "cg_taylor_default")]
    if not rows:  # a partial sweep of runs that keep no samples (`--runs euler_ancestral-50`)
        return
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), 10, figsize=(10, 1.15 * len(rows)), squeeze=False)
    for r, (family, run, kind) in enumerate(rows):
        images = decode(samples[family][run][kind])
        if images.ndim == 5:
            images = images[:, :, 0]
        for c in range(10):
            ax = axes[r][c]
            ax.imshow(images[c, 0].clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
        axes[r][0].set_ylabel(f"{family}\n{run}\n{'no cache' if kind == 'no_cache' else 'CG-Taylor'}", fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
