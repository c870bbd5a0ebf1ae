"""Compare evaluated runs: the results table (top-1, mean Bit-FLOPs, savings and top-1 change against the static
run at the reference bits, top-1 against the static runs' line at the same Bit-FLOPs) and the accuracy vs Bit-FLOPs plot (static curve, dynamic points, their knob sweeps).

Each run is a `train` folder (config.json, log.jsonl) holding the `evaluate` output in <run>/eval/eval.json.
"""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .evaluate import SHUFFLES


def load_run(run: Path) -> Dict:
    for f in ("config.json", "eval/eval.json"):
        if not (run / f).is_file():
            hint = f"; run: python3 -m training evaluate --checkpoint {run}/model.pt --out {run}/eval" if f.startswith("eval") else ""
            raise FileNotFoundError(f"{run}: no {f}{hint}")
    cfg = json.loads((run / "config.json").read_text())
    ev = json.loads((run / "eval/eval.json").read_text())
    log = run / "log.jsonl"
    epochs = sum(1 for line in log.read_text().splitlines() if line.strip()) if log.is_file() else None
    return {"name": run.name, "config": cfg, "eval": ev, "epochs_done": epochs}


def describe(cfg: Dict) -> str:
    m = cfg["model"]
    if cfg["precision"] == "fp":
        return "full precision"
    how = f", {m['act'].upper()} activations" if m.get("act", "dorefa") != "dorefa" else ""
    how += ", distilled" if cfg.get("distill") else ""
    how += ", switchable BN" if m.get("switchable_bn") else ""
    if cfg["precision"] == "static":
        return f"static {cfg['bits']}-bit{how}"
    if cfg["precision"] == "multi":
        return f"multi-precision {{{', '.join(map(str, m['candidates']))}}}{how}"
    extra = f", diversity {cfg['diversity']:g}" if cfg.get("diversity") else ""
    extra += f", confidence {cfg['confidence']:g}" if cfg.get("confidence") else ""
    extra += f", sensitivity {cfg['sensitivity']:g}" if cfg.get("sensitivity") else ""
    if m.get("controller_bits", 32) < 32:
        extra += f", {m['controller_bits']}-bit controller"
    return f"dynamic {{{', '.join(map(str, m['candidates']))}}}, target {cfg['target_bits']:g}{extra}{how}"


def tied_deciles(deciles: List[Dict]) -> int:
    """The most consecutive cost deciles with one mean Bit-FLOPs. Deciles are sorted by cost, so equal means
    there mean every image in them costs the same: splitting them into deciles is arbitrary."""
    best = run = 1
    for a, b in zip(deciles, deciles[1:]):
        run = run + 1 if a["mean_bitflops"] == b["mean_bitflops"] else 1
        best = max(best, run)
    return best


def static_line(points: List[Tuple[float, float]], bitflops: float) -> Optional[float]:
    """Top-1 of static quantization at `bitflops`, from static runs' (Bit-FLOPs, top-1): linear between the
    runs on the frontier (those more accurate than every cheaper one), the best run's top-1 past the costliest,
    None below the cheapest (nothing static costs that little). The paper's claim is a dynamic model above this
    line: more accurate than static quantization at equal or lower Bit-FLOPs."""
    frontier: List[Tuple[float, float]] = []
    for cost, top1 in sorted(points):
        if not frontier or top1 > frontier[-1][1]:
            frontier.append((cost, top1))
    if not frontier or bitflops < frontier[0][0]:
        return None
    for (c0, a0), (c1, a1) in zip(frontier, frontier[1:]):
        if bitflops <= c1:
            return a0 + (bitflops - c0) / (c1 - c0) * (a1 - a0)
    return frontier[-1][1]


def rows(runs: List[Dict], reference_bits: int) -> List[Dict]:
    """One row per run; `vs_static` compares with the static run at the reference bits, when there is one, and
    a dynamic run's `top1_vs_static_line` with the static runs' line at its Bit-FLOPs."""
    points = [(r["eval"]["bitflops"]["mean"], r["eval"]["top1"]) for r in runs if r["config"]["precision"] == "static"]
    ref: Optional[Dict] = next((r for r in runs if r["config"]["precision"] == "static" and r["config"]["bits"] == reference_bits), None)
    out = []
    for r in runs:
        cfg, ev = r["config"], r["eval"]
        row = {"run": r["name"], "what": describe(cfg), "precision": cfg["precision"], "bits": cfg.get("bits"),
               "epochs": r["epochs_done"],
               "init": Path(cfg["init"]).parent.name if cfg.get("init") else None, "train_images": cfg.get("train_limit") or 50000, "top1": ev["top1"],
               "bitflops_mean": ev["bitflops"]["mean"], "vs_static": None}
        if ref is not None and r is not ref:
            base = ref["eval"]
            row["vs_static"] = {"run": ref["name"], "savings": 1 - ev["bitflops"]["mean"] / base["bitflops"]["mean"],
                                "top1_change": ev["top1"] - base["top1"]}
        if cfg["precision"] == "dynamic":
            deciles = ev["accuracy_by_cost_decile"]
            row["one_plan"] = ev["bitflops"]["min"] == ev["bitflops"]["max"]  # a collapsed controller: deciles are arbitrary
            row["tied_deciles"] = tied_deciles(deciles)
            row["top1_cheapest_decile"], row["top1_costliest_decile"] = deciles[0]["top1"], deciles[-1]["top1"]
            # absent from evaluations older than the measurement (the range: older than its five shuffles)
            shuffled, spread = ev.get("top1_shuffled_plans"), ev.get("top1_shuffled_plans_range")
            row["top1_gain_over_shuffled"] = None if shuffled is None else ev["top1"] - shuffled
            row["top1_gain_over_shuffled_range"] = None if spread is None else [ev["top1"] - spread[1], ev["top1"] - spread[0]]
            line = static_line(points, ev["bitflops"]["mean"])
            row["top1_vs_static_line"] = None if line is None else ev["top1"] - line
        out.append(row)
    return out


def markdown(table: List[Dict], reference_bits: int) -> str:
    head = (f"| run | what | epochs | from | train images | top-1 | mean Bit-FLOPs | vs static {reference_bits}-bit: savings | "
            "top-1 change | top-1 vs static line | top-1 cheapest / costliest decile | top-1 gain over shuffled plans |")
    lines = [head, "|" + " --- |" * 12]
    for r in table:
        vs = r["vs_static"]
        dec = ("–" if "one_plan" not in r else "one plan for every image" if r["one_plan"] else
               f"{100 * r['top1_cheapest_decile']:.1f}% / {100 * r['top1_costliest_decile']:.1f}%")
        if r.get("tied_deciles", 1) > 1 and not r["one_plan"]:
            dec += f" (≥ {10 * r['tied_deciles']}% of images at one cost)"
        gain = ("–" if "one_plan" not in r or r["one_plan"] else "not measured" if r["top1_gain_over_shuffled"] is None
                else f"{100 * r['top1_gain_over_shuffled']:+.2f} pt")
        if r.get("top1_gain_over_shuffled_range") and not r["one_plan"]:
            lo, hi = r["top1_gain_over_shuffled_range"]
            gain += f" ({100 * lo:+.2f} to {100 * hi:+.2f} over {SHUFFLES} shuffles)"
        savings = "–" if vs is None else f"{100 * vs['savings']:+.1f}%"
        change = "–" if vs is None else f"{100 * vs['top1_change']:+.2f} pt"
        line = r.get("top1_vs_static_line")
        line = "–" if line is None else f"{100 * line:+.2f} pt"
        epochs = r["epochs"] if r["epochs"] is not None else "?"
        lines.append(f"| {r['run']} | {r['what']} | {epochs} | {r['init'] or 'scratch'} | {r['train_images']} | {100 * r['top1']:.2f}% | "
                     f"{r['bitflops_mean'] / 1e9:.3f} G | {savings} | {change} | {line} | {dec} | {gain} |")
    return "\n".join(lines) + "\n"


def seed_groups(table: List[Dict]) -> List[Dict]:
    """Runs named <configuration>_s<seed> grouped into one row per configuration: top-1 mean and sample standard
    deviation over the seeds (a single run: sd None), mean Bit-FLOPs."""
    groups: Dict[str, List[Dict]] = {}
    for r in table:
        groups.setdefault(re.sub(r"_s\d+$", "", r["run"]), []).append(r)
    out = []
    for name, rs in groups.items():
        top1 = [r["top1"] for r in rs]
        out.append({"configuration": name, "what": rs[0]["what"], "runs": [r["run"] for r in rs], "seeds": len(rs),
                    "top1_mean": statistics.fmean(top1), "top1_sd": statistics.stdev(top1) if len(rs) > 1 else None,
                    "bitflops_mean": statistics.fmean(r["bitflops_mean"] for r in rs),
                    "epochs": sorted({r["epochs"] for r in rs if r["epochs"] is not None})})
    return out


def seeds_markdown(groups: List[Dict]) -> str:
    lines = ["| configuration | what | epochs | seeds | top-1 mean ± sd | mean Bit-FLOPs |", "|" + " --- |" * 6]
    for g in groups:
        sd = "" if g["top1_sd"] is None else f" ± {100 * g['top1_sd']:.2f}"
        lines.append(f"| {g['configuration']} | {g['what']} | {', '.join(map(str, g['epochs'])) or '?'} | {g['seeds']} | "
                     f"{100 * g['top1_mean']:.2f}{sd}% | {g['bitflops_mean'] / 1e9:.3f} G |")
    return "\n".join(lines) + "\n"


def plot(runs: List[Dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    # static runs of one configuration (seeds) as their mean, with the seeds' standard deviation as error bar
    by_what: Dict[Tuple[int, str], List[Dict]] = {}
    for r in runs:
        if r["config"]["precision"] == "static":
            by_what.setdefault((r["config"]["bits"], describe(r["config"])), []).append(r)
    for label in sorted({what.split(", ", 1)[1] if ", " in what else "" for _, what in by_what}):
        pts = sorted((b, statistics.fmean(r["eval"]["bitflops"]["mean"] for r in rs) / 1e9,
                      [100 * r["eval"]["top1"] for r in rs]) for (b, what), rs in by_what.items()
                     if (what.split(", ", 1)[1] if ", " in what else "") == label)
        sd = [statistics.stdev(t) if len(t) > 1 else 0 for _, _, t in pts]
        ax.errorbar([c for _, c, _ in pts], [statistics.fmean(t) for _, _, t in pts], yerr=sd, fmt="s-", capsize=3,
                    label=f"static{' (' + label + ')' if label else ''} (separately trained)")
        for b, c, t in pts:
            ax.annotate(f"{b}b", (c, statistics.fmean(t)), textcoords="offset points", xytext=(4, -10))
    for r in (r for r in runs if r["config"]["precision"] == "dynamic"):
        cal = r["eval"].get("calibration") or []
        line, = ax.plot([c["mean_bitflops"] / 1e9 for c in cal], [100 * c["accuracy"] for c in cal], ":", alpha=.7)
        ax.plot([r["eval"]["bitflops"]["mean"] / 1e9], [100 * r["eval"]["top1"]], "o", color=line.get_color(),
                label=f"{r['name']} (knob 0; dotted: knob sweep)")
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.set_xlabel("mean Bit-FLOPs per image (G, log scale)")
    ax.set_ylabel("top-1 (%)")
    ax.grid(alpha=.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare(run_dirs: List[Path], out: Path, reference_bits: int = 4) -> List[Dict]:
    runs = [load_run(Path(d)) for d in run_dirs]
    table = rows(runs, reference_bits)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(table, indent=1) + "\n")
    (out / "results.md").write_text(markdown(table, reference_bits))
    groups = seed_groups(table)
    if any(g["seeds"] > 1 for g in groups):
        (out / "results_seeds.json").write_text(json.dumps(groups, indent=1) + "\n")
        (out / "results_seeds.md").write_text(seeds_markdown(groups))
    plot(runs, out / "accuracy_vs_bitflops.png")
    return table
