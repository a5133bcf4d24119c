#!/usr/bin/env bash
# Short CUDA check (< 4 min): a fit with a validation split on device="cuda" (regressor and
# classifier), a featurizer on cuda vs cpu, and the epoch benchmark on cpu and cuda in one run.
#   bash benchmarks/gpu_check.sh            (from the repository root)
# Uses $PYTHON or .venv if present; otherwise creates one that sees a system-wide torch (a CUDA build
# already installed stays in use). Prints torch.cuda.is_available() first; without CUDA it
# says so and runs the CPU part only.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}  # PYTHON=/path/to/python skips the venv
if [ ! -x "$PY" ]; then
    python3 -m venv --system-site-packages .venv
    .venv/bin/pip install -q -e . || .venv/bin/pip install -q --no-deps --no-build-isolation -e . \
        || echo "pip install failed (offline?): using whatever the system Python provides"
fi
$PY - <<'PYEOF' || { echo "torch is not importable: nothing to check"; exit 1; }
import torch
print("torch", torch.__version__, "| torch.cuda.is_available():", torch.cuda.is_available(),
      "|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device")
PYEOF
DEVICE=$($PY -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
[ "$DEVICE" = cpu ] && echo "No CUDA: running the checks on the CPU only (nothing GPU-specific is tested)."

echo "== fit with a validation split on $DEVICE"
timeout 90 $PY - "$DEVICE" <<'PYEOF'
import sys, time, numpy as np, torch
from pymatgen.core import Lattice, Structure
from sklearn_atomsets import AtomSetsClassifier, AtomSetsRegressor, MEGNetStructureFeaturizer, WeightedSet
device = torch.device(sys.argv[1])
rng = np.random.default_rng(0)
X = [WeightedSet(rng.normal(size=(int(rng.integers(1, 30)), 32)).astype(np.float32)) for _ in range(2000)]
y = np.array([s.features[:, 0].mean() for s in X])
t = time.perf_counter()
reg = AtomSetsRegressor(device=device, max_epochs=20, patience=5, validation_fraction=0.2, random_state=0).fit(X, y)
print(f"regressor on {device}: {len(reg.net_.history)} epochs, best epoch {reg.best_epoch_}, "
      f"valid score {reg.best_validation_score_:.4f}, {time.perf_counter() - t:.1f} s; predict {reg.predict(X[:3]).round(3)}")
clf = AtomSetsClassifier(device=device, max_epochs=10, validation_fraction=0.2, random_state=0).fit(X, y > np.median(y))
print(f"classifier on {device}: valid ROC-AUC {clf.best_validation_score_:.3f}; proba {clf.predict_proba(X[:1]).round(3)}")
nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.69), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
cscl = Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
here = np.array(MEGNetStructureFeaturizer(cache=False).featurize_many([nacl, cscl], pbar=False))
there = np.array(MEGNetStructureFeaturizer(cache=False, device=device).featurize_many([nacl, cscl], pbar=False))
print(f"featurizer cpu vs {device}: max |difference| {np.abs(here - there).max():.2e}")
PYEOF
echo "rc=$?"

echo "== epoch benchmark (20,000 synthetic materials, 3 epochs), cpu then $DEVICE, same run"
timeout 120 $PY - "$DEVICE" <<'PYEOF'
import functools, sys
sys.path.insert(0, "benchmarks")
import atomsets_epoch_speed as bench
import sklearn_atomsets
base = sklearn_atomsets.AtomSetsRegressor
for device in dict.fromkeys(["cpu", sys.argv[1]]):
    print(f"-- device={device}")
    sklearn_atomsets.AtomSetsRegressor = functools.partial(base, device=device)
    bench.main(["--n-materials", "20000", "--epochs", "3", "--skip-maml"])
PYEOF
echo "rc=$?"
# the benchmark rewrites its results file: keep this short run out of the committed one
git checkout -- benchmarks/results/atomsets_epoch_speed.json 2>/dev/null || true
