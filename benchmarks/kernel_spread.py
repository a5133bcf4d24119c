"""Float32 spread of the frozen parents across batch shapes and CPU kernels (issue 30).

    python benchmarks/kernel_spread.py

Encodes pymatgen's ordered crystals with MEGNet (Eform_MP_2019: batch 1, batch 7, batch 7
without the symmetry reduction) and, when chgnet is installed, CHGNet-0.3.0 (batch 1 and 16),
once in a child process per kernel variant:

- ``base``: torch's and MKL's own choice for this CPU;
- ``ATEN_CPU_CAPABILITY=default``: torch's non-vectorised kernels;
- ``ATEN_CPU_CAPABILITY=avx2``: torch's AVX2 kernels;
- ``MKL_ENABLE_INSTRUCTIONS=AVX2``: MKL's AVX2 code path (what an AVX-512 Xeon runs otherwise).

Prints, for every output, the largest |difference| / scale (scale: the largest |value| of that
output) between batch shapes within a variant and between each variant and ``base``: the
numbers behind the tolerances in ``tests/conftest.py``. The CPU model is printed too.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

VARIANTS = {
    "base": {},
    "aten-default": {"ATEN_CPU_CAPABILITY": "default"},
    "aten-avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "mkl-avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}
MEGNET_OUTPUTS = ["V1", "V3", "E2", "u3", "set2set_atom", "set2set_bond", "f", "prediction"]
CHGNET_OUTPUTS = ["V1", "V3", "V4", "f", "prediction"]


def _values(out, name):
    return np.asarray(out.packed(name) if name[0] in "VE" and name[1:].isdigit() else out[name], dtype=np.float64)


def encode_all(path):
    """In the child: every case's outputs into an .npz file."""
    import torch
    from pymatgen.core import Structure

    from sklearn_atomsets import MEGNetEncoder

    torch.set_num_threads(1)
    folder = Path(importlib.util.find_spec("pymatgen").submodule_search_locations[0]) / "util" / "structures"
    structures = [s for s in (Structure.from_file(p) for p in sorted(folder.glob("*.json"))) if s.is_ordered]
    cases = {
        "megnet b1": (MEGNetEncoder(batch_size=1), MEGNET_OUTPUTS),
        "megnet b7": (MEGNetEncoder(batch_size=7), MEGNET_OUTPUTS),
        "megnet b7 unreduced": (MEGNetEncoder(batch_size=7, symmetry_reduction=False), MEGNET_OUTPUTS),
    }
    if importlib.util.find_spec("chgnet") is not None:
        from sklearn_atomsets import CHGNetEncoder

        cases["chgnet b1"] = (CHGNetEncoder("CHGNet-0.3.0", batch_size=1), CHGNET_OUTPUTS)
        cases["chgnet b16"] = (CHGNetEncoder("CHGNet-0.3.0", batch_size=16), CHGNET_OUTPUTS)
    arrays = {}
    for case, (encoder, names) in cases.items():
        out = encoder.encode(structures)
        for name in names:
            arrays[f"{case}/{name}"] = _values(out, name)
    arrays["capability"] = np.array(torch.backends.cpu.get_cpu_capability())
    np.savez(path, **arrays)


def _relative(a, b):
    scale = np.abs(b).max()
    return float(np.abs(a - b).max() / scale) if scale else 0.0


def _cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        encode_all(sys.argv[2])
        return
    print(f"CPU: {_cpu_model()}; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at the start")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant, env in VARIANTS.items():
            path = Path(tmp) / f"{variant}.npz"
            subprocess.run([sys.executable, __file__, "--child", str(path)], check=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1", **env}, stderr=subprocess.DEVNULL)
            with np.load(path) as data:
                results[variant] = {k: data[k] for k in data.files}
            print(f"{variant}: torch kernels {results[variant].pop('capability')}")
    base = results["base"]
    pairs = [("megnet b1", "megnet b7"), ("megnet b7", "megnet b7 unreduced"), ("chgnet b1", "chgnet b16")]
    print("\nlargest |difference| / scale, over the four variants, between batch shapes or paths")
    for a, b in pairs:
        names = sorted(k.split("/", 1)[1] for k in base if k.startswith(a + "/"))
        if names:
            worst = {n: max(_relative(r[f"{a}/{n}"], r[f"{b}/{n}"]) for r in results.values()) for n in names}
            print(f"  {a} vs {b}: " + ", ".join(f"{n} {v:.1e}" for n, v in worst.items()))
    print("\nlargest |difference| / scale against base, same case, over all cases")
    eps = float(np.finfo(np.float32).eps)
    overall = 0.0
    for variant, arrays in results.items():
        if variant == "base":
            continue
        worst = max((_relative(arrays[k], base[k]), k) for k in base)
        overall = max(overall, worst[0])
        print(f"  {variant}: {worst[0]:.1e} ({worst[1]})")
    print(f"\nlargest spread across kernels: {overall:.1e} of the scale = {overall / eps:.1f} float32 eps; "
          f"tests/conftest.py KERNEL_RTOL = 84 eps = {84 * eps:.1e}")


if __name__ == "__main__":
    main()
