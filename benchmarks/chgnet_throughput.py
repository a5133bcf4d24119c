"""CHGNet parent throughput on MatBench dielectric: chgnet's own predict_structure vs ours.

    python benchmarks/chgnet_throughput.py [--n N] [--efsm-limit M] [--batch-size B] [--threads T]

Measured in one run, on the same structures, after a warm-up:

(a) chgnet's ``predict_structure(..., return_atom_feas=True, return_crystal_feas=True)`` as a
    user calls it (default ``task="efsm"``: energies, forces, stresses, magnetic moments);
(b) the same with ``task="e"`` (the least chgnet's own API computes);
(c) ours (``CHGNetEncoder``): every output (V0..V4, crystal feature f, energy), batched, no
    gradients, with the package's per-row input checks;
(d) ours, ``V1`` only (the pass stops after the first atom convolution);
(e) chgnet's graph converter alone (the part no batching speeds up).

All start from pymatgen Structures and include graph construction. Prints structures/s and the
ratios, and writes benchmarks/results/chgnet_throughput.json. --n 0 means all 4764 crystals.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import sys

from _throughput import parser, peak_rss_mib, print_header, set_up, timed, write_results


def main(argv=None):
    args = parser(__doc__, "CHGNet-0.3.0", "--efsm-limit",
                  "structures for (a), the slowest path (default 0: all); its rate is per structure",
                  batch_help="structures per forward pass (ours and chgnet's)").parse_args(argv)

    import numpy as np

    from sklearn_atomsets import CHGNetEncoder

    structures = set_up(args)
    n = len(structures)
    ours = CHGNetEncoder(args.parent, batch_size=args.batch_size)
    model = ours.model_  # chgnet's own CHGNet, loaded by chgnet: the same weights for both
    reference = chgnet_model(ours)
    print_header(args, n)

    def chgnet_own(task, structures=structures):
        n = len(structures)
        # One call per batch, keeping only NumPy copies, and the freed heap handed back to the
        # OS after each: handed all 4764 structures at once, chgnet 0.4.2's predict_structure
        # (task="efsm") was OOM-killed at 24 GiB (peak RSS 10.8 GiB for 150 structures, 19.0 GiB
        # for 300), and per batch without the trim it still grew to 17 GiB. That memory is
        # glibc's retained free heap, not a leak: with task="e", 640 structures in batches of
        # 64 left 3.3 GiB resident, 0.5 GiB after malloc_trim.
        results = []
        for start in range(0, n, args.batch_size):
            chunk = reference.predict_structure(structures[start : start + args.batch_size], task=task,
                                                return_atom_feas=True, return_crystal_feas=True,
                                                batch_size=args.batch_size)
            chunk = [chunk] if isinstance(chunk, dict) else chunk
            results.extend({key: np.array(value, copy=True) for key, value in r.items()} for r in chunk)
            del chunk
            trim_heap()
        return results

    # warm-ups (model loading and first-call overheads are not counted)
    ours.encode(structures[:8])
    reference.predict_structure(structures[:8], task="e", return_atom_feas=True, return_crystal_feas=True)

    efsm_subset = structures[: args.efsm_limit or n]
    n_a = len(efsm_subset)
    t_a, _ = timed(lambda: chgnet_own("efsm", efsm_subset))
    t_b, ref = timed(lambda: chgnet_own("e"))
    t_c, out = timed(lambda: ours.encode(structures, on_error="nan"))
    t_d, _ = timed(lambda: ours.encode(structures, outputs=["V1"], on_error="nan"))
    t_e, _ = timed(lambda: [model.graph_converter(s) for s in structures])
    peak_mib = peak_rss_mib()
    assert out.ok.all(), out.errors
    f_err = float(np.abs(out["f"] - np.stack([r["crystal_fea"] for r in ref])).max())

    rows = {
        "a_chgnet_predict_structure_efsm": n_a / t_a,
        "b_chgnet_predict_structure_e": n / t_b,
        "c_ours_all_outputs": n / t_c,
        "d_ours_V1_only": n / t_d,
        "e_chgnet_graph_converter_only": n / t_e,
    }
    print(f"\n(a) chgnet predict_structure, task='efsm': {rows['a_chgnet_predict_structure_efsm']:8.1f} structures/s ({n_a} structures, {t_a:.1f} s)")
    print(f"(b) chgnet predict_structure, task='e':    {rows['b_chgnet_predict_structure_e']:8.1f} structures/s ({t_b:.1f} s)")
    print(f"(c) ours, V0..V4 + f + energy:             {rows['c_ours_all_outputs']:8.1f} structures/s ({t_c:.1f} s)")
    print(f"(d) ours, V1 only:                         {rows['d_ours_V1_only']:8.1f} structures/s ({t_d:.1f} s)")
    print(f"(e) chgnet graph converter alone:          {rows['e_chgnet_graph_converter_only']:8.1f} structures/s ({t_e:.1f} s)")
    ratios = {
        "c_over_a": rows["c_ours_all_outputs"] / rows["a_chgnet_predict_structure_efsm"],
        "c_over_b": t_b / t_c,
        "d_over_a": rows["d_ours_V1_only"] / rows["a_chgnet_predict_structure_efsm"],
    }
    print(f"\nratio (c)/(a) = {ratios['c_over_a']:.2f}x   (c)/(b) = {ratios['c_over_b']:.2f}x   "
          f"(d)/(a) = {ratios['d_over_a']:.2f}x")
    print(f"max |f(ours) - crystal_fea(chgnet)| = {f_err:.2e}")
    print(f"peak RSS of this process: {peak_mib:.0f} MiB")
    write_results("chgnet_throughput", args, argv, {"n_structures": n, "n_structures_efsm": n_a},
                  structures_per_s=rows, ratios=ratios, max_abs_f_difference=f_err, peak_rss_mib=peak_mib)
    return 0


def trim_heap():
    """Return freed heap memory to the OS (glibc only; elsewhere a no-op)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def chgnet_model(ours):
    """A second copy of chgnet's model, without our hooks, loaded the way chgnet users do."""
    from chgnet.model import CHGNet

    parent = ours.parent_
    with contextlib.redirect_stdout(io.StringIO()):
        if parent.model_name is not None:
            return CHGNet.load(model_name=parent.model_name, use_device=ours.device, verbose=False)
        return CHGNet.from_file(str(parent.path)).to(ours.device)


if __name__ == "__main__":
    sys.exit(main())
