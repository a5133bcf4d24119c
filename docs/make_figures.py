"""Build-time figures and tables for the docs (run by conf.py; also runnable alone).

Everything shown is made here from the code or from ``benchmarks/results/*.json``, so the
pages cannot drift from what the library does and what the benchmarks measured.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

DOCS = Path(__file__).resolve().parent
RESULTS = DOCS.parent / "benchmarks" / "results"


def data_flow(path):
    """structure -> graph -> frozen encoder (V0..V3, u, f) -> AtomSets."""
    fig, ax = plt.subplots(figsize=(11, 3.4))
    ax.set_xlim(0, 11)
    ax.set_ylim(0, 3.4)
    ax.axis("off")
    boxes = [
        (0.1, "Structure /\nComposition", "#e8eef7"),
        (2.1, "Crystal graph\nsites, bonds < cutoff\nGaussian bond lengths", "#e8eef7"),
        (4.4, "Frozen parent MEGNet\nembedding -> block 1..3\n-> set2set -> readout", "#fde9d9"),
        (6.9, "Features\nV0, V1..V3 (per site)\nu1..u3, f (per crystal)", "#e2f0d9"),
        (9.1, "AtomSets\nMLP per row -> readout\n-> MLP -> property", "#fff2cc"),
    ]
    for x, text, color in boxes:
        ax.add_patch(FancyBboxPatch((x, 1.1), 1.8, 1.3, boxstyle="round,pad=0.05", fc=color, ec="#444"))
        ax.text(x + 0.9, 1.75, text, ha="center", va="center", fontsize=8.5)
    for (x0, *_), (x1, *_) in zip(boxes[:-1], boxes[1:]):
        ax.add_patch(FancyArrowPatch((x0 + 1.9, 1.75), (x1 - 0.1, 1.75), arrowstyle="->", mutation_scale=14))
    ax.text(5.3, 0.55, "trained once on 133,420 Materials Project formation energies; never retrained",
            ha="center", fontsize=8, style="italic")
    ax.text(10.0, 0.55, "trained on your data", ha="center", fontsize=8, style="italic")
    ax.text(5.5, 3.0, "V0: compositions   V1: structures   (the paper's advice)", ha="center", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def encoder_throughput_table(path):
    """Table of benchmarks/results/encoder_throughput.json, or a note that it is missing."""
    source = RESULTS / "encoder_throughput.json"
    if not source.is_file():
        path.write_text("*No encoder benchmark results in benchmarks/results yet.*\n")
        return
    data = json.loads(source.read_text())
    labels = {
        "a_megnet_per_structure": "(a) megnet ``MEGNetDescriptor``, one structure at a time",
        "b_megnet_batched": "(b) megnet batched through Keras",
        "c_ours_all_outputs": "(c) sklearn-atomsets, every output",
        "c_ours_featurizer_outputs": "(c') sklearn-atomsets, featurizer outputs (no per-bond)",
        "c_ours_V1_only": "(c'') sklearn-atomsets, V1 only",
        "c0_unreduced_all_outputs": "(c) without the symmetry reduction",
        "c0_unreduced_featurizer_outputs": "(c') without the symmetry reduction",
        "c0_unreduced_V1_only": "(c'') without the symmetry reduction",
        "p_no_symmetry_reduction_on": "(p) crystals with no symmetry (sites shaken), reduction on",
        "p_no_symmetry_reduction_off": "(p) crystals with no symmetry (sites shaken), reduction off",
    }
    lines = [
        f"Measured by ``{data['command'].strip()}`` on {data['n_structures']} MatBench dielectric structures, "
        f"{data['cpus']} CPU cores.",
        "",
        ".. list-table::",
        "   :header-rows: 1",
        "",
        "   * - path",
        "     - structures / s",
    ]
    for key, label in labels.items():
        if key in data["structures_per_s"]:
            lines += [f"   * - {label}", f"     - {data['structures_per_s'][key]:.1f}"]
    path.write_text("\n".join(lines) + "\n")


def matbench_pages(out_dir):
    """MatBench table and plots, made by benchmarks/report.py from the results files."""
    sys.path.insert(0, str(DOCS.parent / "benchmarks"))
    import report

    results = report.load_default_results()
    table, plots = out_dir / "matbench_table.rst", out_dir / "matbench_plots.rst"
    parents, rows = report.parent_comparison(results)
    comparison = ["*No task has results with more than one parent yet.*"]
    if rows:
        comparison = [".. list-table::", "   :header-rows: 1", ""]
        for row in [["task", "model", *parents, "anchors"], *rows]:
            comparison += [f"   * - {row[0]}"] + [f"     - {cell}" for cell in row[1:]]
    (out_dir / "parent_comparison.rst").write_text("\n".join(comparison) + "\n")
    if not results:
        table.write_text("*No MatBench results in benchmarks/results/matbench yet.*\n")
        plots.write_text("")
        return
    # the headline first: one recommended model per task, by the rule fixed in advance
    lines = ["**Headline: one recommended model per task.** " + report.RECOMMENDATION_RULE, "",
             ".. list-table::", "   :header-rows: 1", ""]
    for row in [list(report.HEADLINE_COLUMNS), *report.headline_rows(results)]:
        lines += [f"   * - {row[0]}"] + [f"     - {cell}" for cell in row[1:]]
    if report.headline_figure(results, out_dir / "headline_vs_ammexpress.png"):
        lines += ["", ".. image:: /_generated/headline_vs_ammexpress.png", "   :alt: error relative to AMMExpress", ""]
    lines += ["", "**Every model.**", ""]
    lines += [report.CLASSIFICATION_NOTE, "", report.SEEDS_NOTE, "", ".. list-table::", "   :header-rows: 1", "",
             "   * - task", "     - model", "     - training", "     - mean ± std over seeds (folds)",
             "     - at epoch cap", "     - AMMExpress v2020",
             "     - RF-SCM/Magpie", "     - MEGNet (kgcnn)", "     - best entry"]
    for r in results:
        anchors = r["anchors"]
        best = report.best_entry(anchors)
        metric = report.metric_name(r)
        for name, m in r["models"].items():
            task = (f"{r['task']} ({metric})" + (", composition only" if r.get("composition_only") else "")
                    + (", approx. structures" if r.get("approximate_structures") else ""))
            lines += [f"   * - {task}", f"     - {report.row_name(r, name)}", f"     - {report.training(r, name)}",
                      f"     - {report.score_cell(m)}", f"     - {report.cap_cell(m)}",
                      f"     - {anchors.get('AMMExpress v2020', '')}", f"     - {anchors.get('RF-SCM/Magpie', '')}",
                      f"     - {anchors.get('MEGNet (kgcnn)', '-')}", f"     - {best}"]
    notes = sorted({n for r in results for n in r.get("notes", [])})
    if notes:
        lines += ["", "Notes from the runs:", ""] + [f"- {n}" for n in notes]
    lines += ["", "Targets, stated from the numbers above:", "", report.target_check(results)]
    table.write_text("\n".join(lines) + "\n")
    images = []
    for r in results:
        key = report.result_key(r)
        report.bar_chart(r, out_dir / f"{key}_bars.png")
        # paths are relative to benchmarks.rst, which includes this file
        images += [f".. image:: /_generated/{key}_bars.png", f"   :alt: {key} scores", ""]
        if r["metric"] == "mae":
            report.parity_plot(r, out_dir / f"{key}_parity.png")
            images += [f".. image:: /_generated/{key}_parity.png", f"   :alt: {key} parity", ""]
    plots.write_text("\n".join(images) + "\n")


# what the paper claims in each study, shown next to what the run here measured
STUDY_TEXT = {
    "convergence": ("Convergence with data size (paper Figs 2-3)",
                    "Paper's claim: the transfer-learned models (AtomSets-V0, AtomSets-V1) beat their "
                    "counterparts without transfer learning (AtomSets, MLP-f) at every size, most at the "
                    "smallest. Repeat k samples the training points from official fold k's training part "
                    "and is scored on fold k's test part."),
    "extrapolation": ("Extrapolation (paper Fig. 4)",
                      "The top 10% of target values are never trained on. Paper's claim: the "
                      "transfer-learned model generalises better outside the training range."),
    "parents": ("Choice of parent model (paper Fig. 5)",
                "AtomSets-V1 on the official folds with V1 features of three parents. Paper's claim: "
                "the larger formation-energy parent gives better features than the elasticity parent. "
                "Eform_MP_2018 and logK_MP_2019 build graphs with a 4 Å cutoff, and cannot encode "
                "crystals with a site that has no neighbour that close (neither can megnet); those "
                "crystals leave the training and test folds of all three parents."),
    "structure_only": ("Structure only (paper Supplementary Table 7)",
                       "Every element replaced by H before featurizing: what the geometry alone carries."),
}


def studies_page(out_dir):
    """Summaries and plots of the paper studies, redrawn from benchmarks/results/studies/*.json."""
    sys.path.insert(0, str(DOCS.parent / "benchmarks"))
    import paper_studies

    lines = []
    for name, (title, claim) in STUDY_TEXT.items():
        lines += [title, "-" * len(title), "", claim, ""]
        result = paper_studies.load_study(name, RESULTS / "studies")
        if result is None:
            lines += ["*No results for this study in benchmarks/results/studies yet.*", ""]
            continue
        paper_studies.PLOTTERS[name](result, out_dir / f"study_{name}.png")
        lines += [f".. image:: /_generated/study_{name}.png", f"   :alt: {title}", "",
                  f"Measured here ({result['loss'].upper()} loss for regression, at most "
                  f"{result['max_epochs']} epochs, patience {result['patience']}; "
                  f"{result['wall_s'] / 60:.0f} min on {result['threads']} thread):", "", "::", ""]
        lines += ["    " + line for line in paper_studies.SUMMARIES[name](result)] + [""]
    (out_dir / "studies.rst").write_text("\n".join(lines) + "\n")


def main(out_dir):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data_flow(out_dir / "data_flow.png")
    encoder_throughput_table(out_dir / "encoder_throughput.rst")
    matbench_pages(out_dir)
    studies_page(out_dir)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else DOCS / "_generated")
