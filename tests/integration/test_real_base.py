"""Integration: the real base model, a real adapter trained on it, and the CLI against a real HABITLOOP_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from agent import Settings, load_base
from skills import BaseMismatchError, ChatExample, LoraSpec, Residency, SkillStore, TrainConfig, train_lora

# Four lines of data and a few steps: enough to move real weights; this is a plumbing test, not a learning curve.
EXAMPLES = [
    ChatExample.from_pair(
        f"What is {a} * {b}?",
        f'<tool_call>{{"name": "calculator", "arguments": {{"expression": "{a}*{b}"}}}}</tool_call>',
    )
    for a, b in [(3, 4), (12, 7), (9, 9), (15, 2)]
]
SMALL = TrainConfig(lora=LoraSpec(r=4, alpha=8, target_modules=("q_proj", "v_proj")), steps=3, batch_size=2, seed=0)


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HABITLOOP_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_default_base_is_smollm2_and_the_cache_keeps_its_fingerprint(real_base: Any, real_settings: Settings) -> None:
    assert real_base.name == "smollm2-135m-instruct"
    assert real_base.model.config.model_type == "llama"
    assert 130_000_000 < real_base.parameters < 140_000_000
    assert real_base.dtype == "float32"
    # The marker's fingerprint was computed on the model as parsed from the GGUF; the loaded one from the cache.
    marker = json.loads((real_settings.models_dir / real_base.name / "habitloop-base.json").read_text())
    assert marker["fingerprint"] == real_base.fingerprint
    again = load_base(settings=real_settings)
    assert again.fingerprint == real_base.fingerprint
    ids = real_base.tokenizer("Hello there", return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(real_base.model(**ids).logits, again.model(**ids).logits)


def test_model_info_json(real_base: Any, real_home: Path) -> None:
    result = _cli(real_home, "model", "info", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert set(info) >= {"name", "source", "parameters", "dtype", "fingerprint", "cache_path", "load_seconds"}
    assert info["fingerprint"] == real_base.fingerprint
    assert info["source"].endswith(".gguf")
    assert Path(info["cache_path"]).is_dir()


def test_a_real_adapter_trains_commits_loads_and_changes_outputs(
    real_base: Any, real_home: Path, tmp_path: Path
) -> None:
    store = SkillStore(real_home / "skills", base_fingerprint=real_base.fingerprint)
    result = train_lora(
        real_base.model, real_base.tokenizer, EXAMPLES, tmp_path / "adapter", config=SMALL, progress=False
    )
    assert result.losses[-1] < result.losses[0]
    store.create(
        "calc", result.adapter_dir, kind="tool_habit", description="calculator calls", provenance=result.provenance
    )
    record = store.revision("calc")
    assert record.trainable_params == result.trainable_params > 0
    assert record.provenance.data_hash == result.data_hash

    ids = real_base.tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 6 * 7?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        base_logits = real_base.model(**ids).logits
    residency = Residency(real_base.model, store, max_hot=2)
    try:  # leave the session's base as it was for the other tests, even when an assert fails
        residency.activate("calc")
        with torch.no_grad():
            skill_logits = residency.model(**ids).logits
            with residency.trial(result.adapter_dir) as model:
                trial_logits = model(**ids).logits
            with residency.base_only() as model:
                assert torch.equal(model(**ids).logits, base_logits)
        assert not torch.equal(skill_logits, base_logits), "the adapter must change the base's outputs"
        assert torch.equal(skill_logits, trial_logits), "the stored adapter must equal the one training saved"
    finally:
        residency.model.unload()


def test_cli_lists_imports_and_refuses_a_foreign_base(real_base: Any, real_home: Path, tmp_path: Path) -> None:
    # A skill made for another base (the tiny test model) must be refused by import, with both fingerprints named.
    from agent.testing import tiny_base

    tiny = tiny_base()
    foreign_store = SkillStore(tmp_path / "foreign", base_fingerprint=tiny.fingerprint)
    adapter = train_lora(tiny.model, tiny.tokenizer, EXAMPLES, tmp_path / "tiny-adapter", config=SMALL, progress=False)
    foreign_store.create("foreign", adapter.adapter_dir, kind="memory")
    archive = foreign_store.export("foreign", tmp_path / "foreign.tar.gz")
    refused = _cli(real_home, "skills", "import", str(archive))
    assert refused.returncode == 2
    assert tiny.fingerprint in refused.stderr and real_base.fingerprint in refused.stderr
    with pytest.raises(BaseMismatchError):
        SkillStore(real_home / "skills", base_fingerprint=real_base.fingerprint).import_archive(archive)

    listed = _cli(real_home, "skills", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "foreign" not in [s["name"] for s in json.loads(listed.stdout)["skills"]]
