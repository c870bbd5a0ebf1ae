"""PNG plots of an evaluation (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .evaluate import cost_order  # noqa: E402


def write_plots(ev, test, out: Path, grid: int = 8) -> None:
    per = ev["_per_image"]
    if ev["calibration"]:
        fig, ax = plt.subplots(figsize=(5, 4))
        cal = ev["calibration"]
        ax.plot([c["mean_bitflops"] / 1e6 for c in cal], [100 * c["accuracy"] for c in cal], "o-", label="dynamic, knob sweep")
        st = ev.get("static_at_candidates", [])
        ax.plot([s["bitflops"] / 1e6 for s in st], [100 * s["accuracy"] for s in st], "s--", label="same weights, all layers at b")
        for s in st:
            ax.annotate(f"{s['bits']}b", (s["bitflops"] / 1e6, 100 * s["accuracy"]))
        ax.set_xlabel("mean Bit-FLOPs per image (millions)")
        ax.set_ylabel("top-1 (%)")
        ax.legend()
        ax.grid(alpha=.3)
        fig.tight_layout()
        fig.savefig(out / "accuracy_vs_bitflops.png", dpi=120)
        plt.close(fig)
        layers, hist = ev["layers"], ev["bit_histogram"]
        bits = sorted({int(b) for h in hist.values() for b in h})
        fig, ax = plt.subplots(figsize=(8, 4))
        bottom = np.zeros(len(layers))
        for b in bits:
            v = np.array([hist[n].get(str(b), 0) for n in layers], float) / ev["images"]
            ax.bar(range(len(layers)), v, bottom=bottom, label=f"{b} bits")
            bottom += v
        ax.set_xticks(range(len(layers)))
        ax.set_xticklabels(layers, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("share of images")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "bits_per_layer.png", dpi=120)
        plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    axes[0].hist(per["bitflops"] / 1e6, bins=40)
    axes[0].set_xlabel("Bit-FLOPs per image (millions)")
    axes[0].set_ylabel("images")
    dec = ev["accuracy_by_cost_decile"]
    axes[1].bar([d["decile"] for d in dec], [100 * d["top1"] for d in dec])
    axes[1].set_xlabel("Bit-FLOPs decile (1 = cheapest)")
    axes[1].set_ylabel("top-1 (%)")
    fig.tight_layout()
    fig.savefig(out / "bitflops_distribution.png", dpi=120)
    plt.close(fig)
    # The paper's Fig. 4: the images the controller found cheapest and costliest.
    order = cost_order(per["bitflops"])
    for tag, idx in (("cheapest", order[:grid * grid]), ("costliest", order[::-1][:grid * grid])):
        fig, axes = plt.subplots(grid, grid, figsize=(grid, grid + 0.4))
        for ax, i in zip(axes.flat, list(idx) + [None] * (grid * grid - len(idx))):
            ax.axis("off")
            if i is not None:
                ax.imshow(test.images[i].permute(1, 2, 0).numpy())
        fig.suptitle(f"{tag} test images by Bit-FLOPs")
        fig.tight_layout()
        fig.savefig(out / f"images_{tag}.png", dpi=100)
        plt.close(fig)
