"""Pareto plot of a search: accuracy vs predicted latency and energy on the search's board.

Points: the searched network, the reference networks and random networks of the space
(one-shot accuracy: supernet weights, batch norm recalibrated), plus, when given, the
trained baselines of ``bench/search.py`` (their integer accuracy where the rows have it,
else the float ``accuracy``).
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {"searched": dict(marker="*", s=220, c="tab:red", zorder=5),
         "random": dict(marker="o", s=25, c="0.6"),
         "reference": dict(marker="s", s=50, c="tab:blue"),
         "trained": dict(marker="D", s=50, c="tab:green")}


def _style(net):
    if net == "searched":
        return "searched"
    return "random" if net.startswith("random") else "reference"


def pareto(result, path, trained=()):
    """Write the two-panel plot of ``result`` (result.json's dict) to ``path``."""
    board = result["config"]["board"]
    axes_keys = ((f"cycles_{board}", f"predicted cycles / image ({board})"),
                 (f"energy_uj_{board}", f"predicted energy / image, uJ (45 nm, {board})"))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, (key, xlabel) in zip(axes, axes_keys):
        seen = set()
        for row in result["networks"]:
            if row.get(key) is None:
                continue
            kind = _style(row["net"])
            ax.scatter(row[key], 100 * row["one_shot_accuracy"], **STYLE[kind],
                       label=None if kind in seen else f"{kind} (one-shot)")
            seen.add(kind)
            if kind != "random":
                ax.annotate(row["net"], (row[key], 100 * row["one_shot_accuracy"]),
                            fontsize=7, xytext=(4, 4), textcoords="offset points")
        for row in (r for r in trained if r.get(key) is not None):
            acc = 100 * row.get("integer_accuracy", row["accuracy"])
            kind = "integer" if "integer_accuracy" in row else "float"
            ax.scatter(row[key], acc, **STYLE["trained"],
                       label=None if "trained" in seen else f"trained, {kind} (bench)")
            seen.add("trained")
            ax.annotate(row["net"], (row[key], acc), fontsize=7, xytext=(4, -10),
                        textcoords="offset points")
        if key.startswith("cycles") and result["metric"] == "cycles":
            ax.axvline(result["config"]["budget"], ls="--", c="k", lw=0.8, label="budget")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy, %")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"search {result['name']}: {result['config']['dataset']}, "
                 f"{result['config']['space']} space")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
