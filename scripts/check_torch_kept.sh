#!/usr/bin/env bash
# Does installing the package keep a torch that is already installed (a CUDA build shared
# with other packages, say)? Two fresh venvs, each with a torch put in first:
#   1. a stand-in "torch 2.5.0" (metadata only, built here: no download): a release other
#      than the one constraints-cpu.txt pins. `pip install --dry-run -e .` must not plan to
#      install torch. With the old `torch==2.13.0` requirement this check fails.
#   2. the real torch==2.13.0 (the CPU wheel on this machine's disk): `pip install -e .`, then
#      torch's version must be unchanged and the package must import.
# Usage: bash scripts/check_torch_kept.sh [source dir, default: this checkout] [--quick: step 1 only]
set -euo pipefail
repo=$(cd "${1:-$(dirname "$0")/..}" && pwd)
quick=${2:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== 1. a different torch already installed (stand-in torch 2.5.0)"
python3 -m venv "$work/a"
python3 - "$work/dist" <<'EOF'
import base64, hashlib, pathlib, sys, zipfile

out = pathlib.Path(sys.argv[1]); out.mkdir()
files = {
    "torch/__init__.py": '__version__ = "2.5.0"\n',
    "torch-2.5.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: torch\nVersion: 2.5.0\n",
    "torch-2.5.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: check_torch_kept\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = []
for name, text in files.items():
    digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
    record.append(f"{name},sha256={digest},{len(text.encode())}")
record.append("torch-2.5.0.dist-info/RECORD,,")
files["torch-2.5.0.dist-info/RECORD"] = "\n".join(record) + "\n"
with zipfile.ZipFile(out / "torch-2.5.0-py3-none-any.whl", "w") as whl:
    for name, text in files.items():
        whl.writestr(name, text)
EOF
"$work/a/bin/pip" install -q --no-index --no-deps "$work/dist/torch-2.5.0-py3-none-any.whl"
"$work/a/bin/pip" install -q --dry-run --report "$work/report.json" -e "$repo"
python3 - "$work/report.json" <<'EOF'
import json, sys

planned = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in json.load(open(sys.argv[1]))["install"]}
print(f"pip would install {len(planned)} distributions; torch among them: {planned.get('torch', 'no')}")
if "torch" in planned:
    sys.exit("FAIL: installing the package would replace the torch already installed (2.5.0)")
print("OK: torch 2.5.0 kept")
EOF
[ "$quick" = "--quick" ] && exit 0

echo "== 2. the real torch==2.13.0 installed first, then pip install -e ."
python3 -m venv "$work/b"
"$work/b/bin/pip" install -q torch==2.13.0
before=$("$work/b/bin/python" -W ignore -c "import torch; print(torch.__version__)")
"$work/b/bin/pip" install -q -e "$repo"
after=$("$work/b/bin/python" -c "import torch; print(torch.__version__)")
"$work/b/bin/python" -c "import sklearn_atomsets, torch; print('imports:', sklearn_atomsets.__file__)"
echo "torch before: $before, after: $after"
[ "$before" = "$after" ] || { echo "FAIL: torch changed"; exit 1; }
echo "OK: torch $after kept"
