"""habitloop's dependencies for the vLLM venv (`make vllm-setup`): all of them but torch and transformers, which
vLLM's CPU build brings (transformers<5.20 where habitloop asks >=5.20), and the test tools of the dev extra."""

import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
wanted = [d for d in project["dependencies"] if not d.startswith(("torch", "transformers"))]
wanted += [d for d in project["optional-dependencies"]["dev"] if d.startswith(("pytest", "hypothesis", "openai"))]
print(" ".join(wanted))
