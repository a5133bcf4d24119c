"""Command line: ``python -m sklearn_atomsets`` (or ``sklearn-atomsets``).

``encode``: run the frozen parent on crystal structures (default: the crystals pymatgen
ships) and print its predictions and the shapes of the AtomSets feature hierarchy.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path


def _pymatgen_structures():
    from pymatgen.core import Structure

    folder = Path(importlib.util.find_spec("pymatgen").submodule_search_locations[0]) / "util" / "structures"
    return [(p.stem, Structure.from_file(p)) for p in sorted(folder.glob("*.json"))]


def encode(args):
    from pymatgen.core import Structure

    from . import MEGNetEncoder

    if args.files:
        named = [(Path(f).name, Structure.from_file(f)) for f in args.files]
    else:
        named = _pymatgen_structures()
    encoder = MEGNetEncoder(args.parent)
    start = time.perf_counter()
    out = encoder.encode([s for _, s in named], on_error="nan")
    seconds = time.perf_counter() - start
    parent = encoder.parent_
    unit = parent.metadata.get("unit", "")
    print(f"parent: {parent.name} ({parent.path}), cutoff {parent.cutoff} A")
    print(f"{'structure':<24} {'sites':>5}  prediction ({unit})")
    for k, (name, structure) in enumerate(named):
        value = "failed: " + out.errors[k] if k in out.errors else f"{out['prediction'][k, 0]: .4f}"
        print(f"{name:<24} {len(structure):>5}  {value}")
    print("\nfeature shapes (first structure that encoded):")
    first = int(out.ok.argmax()) if out.ok.any() else None
    for name in out.names:
        value = out[name][first] if first is not None else None
        print(f"  {name:<13} {'' if value is None else tuple(value.shape)}")
    print(f"\nencoded {out.ok.sum()} of {len(out)} structures in {seconds:.2f} s")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="sklearn-atomsets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("encode", help="featurize structures with the frozen parent model")
    p.add_argument("files", nargs="*", help="structure files pymatgen can read (default: pymatgen's own)")
    p.add_argument("--parent", default="Eform_MP_2019", help="parent model name or .hdf5 path")
    p.set_defaults(func=encode)
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["encode", *(argv or [])])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
