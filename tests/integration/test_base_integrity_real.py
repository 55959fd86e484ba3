"""Integration: on the real base (SmolLM2-135M), nothing a store of skills does changes the base by a single bit.

Adapters are made the way other tools make them (peft's `get_peft_model`, random init, `save_pretrained`): no
training, so the test stays fast. A poisoned file (valid LoRA tensors plus a zeroed base weight) is refused at create
and, planted in the store with matching checksums, at load; the base's digest and its answer stay the same.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file

from agent.backends.local import LocalChatModel
from agent.backends.protocol import ChatRequest
from agent.base import base_weights_digest
from skills import CorruptSkillError, InvalidAdapterError, Residency, SkillStore

pytestmark = pytest.mark.filterwarnings("ignore:Adapter .* was active which is now deleted:UserWarning")
POISON = "base_model.model.model.layers.15.mlp.down_proj.weight"  # the weight the probe zeroed
ASK = [{"role": "user", "content": "What is the capital of France?"}]
SHAPES: dict[str, dict[str, Any]] = {
    "s0": {"r": 4, "target_modules": ["q_proj", "v_proj"]},
    "s1": {"r": 2, "target_modules": ["down_proj"]},
    "s2": {"r": 4, "target_modules": ["k_proj", "o_proj"], "rank_pattern": {"k_proj": 2}},
}


def peft_adapter(model: Any, folder: Path, seed: int, options: dict[str, Any]) -> Path:
    """An adapter saved by peft itself with random (non-zero) weights; the base's modules are put back after."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():  # peft notes that this model was wrapped before (and unwrapped again)
        warnings.simplefilter("ignore")
        wrapped = get_peft_model(model, LoraConfig(init_lora_weights=False, **options))
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            if "lora_" in name:
                param.mul_(0.05)  # random init is loud; keep the skills' answers readable
    wrapped.save_pretrained(str(folder))
    wrapped.unload()
    return folder


def test_the_real_base_is_bit_identical_after_everything(real_base: Any, tmp_path: Path) -> None:
    base = real_base
    store = SkillStore(tmp_path / "skills", base_fingerprint=base.fingerprint)
    for seed, (name, options) in enumerate(SHAPES.items()):
        store.create(name, peft_adapter(base.model, tmp_path / name, seed, options), kind="style")
    poisoned = shutil.copytree(tmp_path / "s0", tmp_path / "poisoned")
    tensors = load_file(str(poisoned / "adapter_model.safetensors"))
    tensors[POISON] = torch.zeros_like(base.model.state_dict()[POISON.removeprefix("base_model.model.")])
    save_file(tensors, str(poisoned / "adapter_model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(InvalidAdapterError, match=POISON):
        store.create("poisoned", poisoned, kind="style")
    store.create("victim", tmp_path / "s0", kind="style")  # then planted as an older version could have stored it
    revision = store.revision_dir("victim")
    shutil.copyfile(poisoned / "adapter_model.safetensors", revision / "adapter_model.safetensors")
    record = json.loads((revision / "revision.json").read_text())
    record["files"]["adapter_model.safetensors"] = hashlib.sha256(
        (revision / "adapter_model.safetensors").read_bytes()
    ).hexdigest()
    (revision / "revision.json").write_text(json.dumps(record))

    before = base_weights_digest(base.model)
    residency = Residency(base.model, store, max_hot=2, max_warm=1)
    local = LocalChatModel(base, residency)
    try:
        answer = local.generate(ASK, max_new_tokens=8).text
        for name in SHAPES:
            for _ in range(2):  # the second turn decodes with the skill merged into the weights
                local.generate(ASK, skills=[(name, 1)], max_new_tokens=2)
        for _ in range(2):
            local.generate(ASK, skills=[("s0", 1), ("s1", 1)], max_new_tokens=2)  # composed, then merged
        local.generate_batch(
            [ChatRequest(messages=ASK, skills=s, max_new_tokens=2) for s in ([], [("s1", 1)], [("s2", 1)])]
        )
        with pytest.raises(CorruptSkillError, match=POISON):
            local.generate(ASK, skills=[("victim", 1)], max_new_tokens=2)
        for key in residency.hot() + residency.warm():
            residency.evict(*key)
            residency.evict(*key)
        assert residency.stats.hot_evictions >= 3 and residency.stats.merges >= 3
        assert base_weights_digest(residency.model) == before
        assert local.generate(ASK, max_new_tokens=8).text == answer
    finally:
        if isinstance(residency.model, PeftModel):
            residency.model.unload()  # the session's base goes back as it came
    assert base_weights_digest(base.model) == before
