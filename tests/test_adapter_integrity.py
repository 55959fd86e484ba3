"""Adapter integrity: a skill's file holds exactly the LoRA tensors its adapter_config.json implies, and nothing a
skill does (loading, switching, composing, merging, evicting) changes the shared base by a single bit.

peft loads an adapter with `load_state_dict(strict=False)` on the whole shared model, so a tensor named like a base
weight would replace that weight for every skill and user of the process. Every way in is probed here: `create`,
`add_revision`, `import_archive`, pack install, files planted in a store written by an older version (read_adapter,
`Residency.load`), and training candidates (`Residency.trial`).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import tarfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file

from agent.backends.local import LocalChatModel
from agent.backends.protocol import ChatRequest
from agent.base import base_weights_digest
from agent.testing import random_adapter
from skills import (
    Composer,
    CompositionSpec,
    CorruptSkillError,
    InvalidAdapterError,
    Residency,
    SkillStore,
)
from skills.packs import create_pack, install_pack

pytestmark = pytest.mark.filterwarnings("ignore:Adapter .* was active which is now deleted:UserWarning")

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
# A base weight of the tiny Llama (down_proj of its last layer: 64 x 128), the weight the probe zeroed.
POISON = "base_model.model.model.layers.1.mlp.down_proj.weight"
QV = "base_model.model.model.layers.0.self_attn.{module}.lora_{part}.weight"
MESSAGES = [{"role": "user", "content": "ping"}]
Adapter = Callable[[str], Path]


# ------------------------------------------------------------------------------------------------ helpers


def rewrite(folder: Path, add: dict[str, torch.Tensor] | None = None, config: dict[str, Any] | None = None) -> Path:
    """Add tensors to an adapter folder's safetensors and/or change keys of its adapter_config.json."""
    if add:
        tensors = load_file(str(folder / WEIGHTS))
        tensors.update(add)
        save_file(tensors, str(folder / WEIGHTS), metadata={"format": "pt"})
    if config:
        path = folder / CONFIG
        path.write_text(json.dumps({**json.loads(path.read_text()), **config}))
    return folder


def reseal(folder: Path) -> None:
    """Rewrite a revision's checksums to match its (tampered) files, as a store written by an old version would be."""
    record_path = folder / "revision.json"
    record = json.loads(record_path.read_text())
    record["files"] = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in record["files"]}
    record_path.write_text(json.dumps(record))


def plant(store: SkillStore, name: str, **changes: Any) -> None:
    """Tamper with the committed current revision of `name` on disk, with matching checksums."""
    folder = store.revision_dir(name)
    rewrite(folder, **changes)
    reseal(folder)


def qv_adapter(tiny: Any, folder: Path, **kwargs: Any) -> Path:
    """A LoRA on q_proj and v_proj of the tiny base, rank 8 unless told, with visible (non-zero) updates."""
    return random_adapter(tiny, folder, std=0.05, **kwargs)


def zeros_like_base(tiny: Any, key: str) -> torch.Tensor:
    return torch.zeros_like(tiny.model.state_dict()[key.removeprefix("base_model.model.")])


@torch.no_grad()
def logits(model: Any, tiny: Any) -> torch.Tensor:
    ids = torch.tensor([tiny.tokenizer("<|im_start|>user\nping<|im_end|>\n", add_special_tokens=False)["input_ids"]])
    return model(input_ids=ids).logits


# Tensors an adapter on q_proj/v_proj (rank 8) of the tiny base may not hold, each for a different reason.
FOREIGN: dict[str, Callable[[Any], torch.Tensor]] = {
    POISON: lambda tiny: zeros_like_base(tiny, POISON),  # a base weight
    "base_model.model.model.embed_tokens.weight": lambda tiny: zeros_like_base(
        tiny, "base_model.model.model.embed_tokens.weight"
    ),  # the (tied) embeddings
    "base_model.model.model.norm.weight": lambda tiny: torch.zeros(64),
    "base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight": lambda tiny: torch.zeros(64, 64),
    "base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias": lambda tiny: torch.zeros(64),
    "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector": lambda tiny: torch.ones(64),  # no DoRA
    "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight": lambda tiny: torch.zeros(8, 128),  # not targeted
    "model.layers.0.self_attn.q_proj.weight": lambda tiny: torch.zeros(64, 64),  # without peft's prefix
    "notes": lambda tiny: torch.zeros(1),
}


def assert_names(error: BaseException, key: str) -> None:
    text = str(error)
    assert key in text, text
    assert "\n" not in text, text  # one line, not a traceback's worth


# ------------------------------------------------------------------------------------------------ every way in


@pytest.mark.parametrize("key", list(FOREIGN))
def test_create_refuses_a_foreign_tensor_naming_it(store: SkillStore, tiny: Any, tmp_path: Path, key: str) -> None:
    folder = rewrite(qv_adapter(tiny, tmp_path / "a"), add={key: FOREIGN[key](tiny)})
    with pytest.raises(InvalidAdapterError) as info:
        store.create("poisoned", folder, kind="style")
    assert_names(info.value, key)
    assert not store.exists("poisoned") and store.list() == []


def test_add_revision_refuses_a_foreign_tensor(store: SkillStore, tiny: Any, tmp_path: Path) -> None:
    store.create("victim", qv_adapter(tiny, tmp_path / "ok"), kind="style")
    folder = rewrite(qv_adapter(tiny, tmp_path / "bad", seed=1), add={POISON: zeros_like_base(tiny, POISON)})
    with pytest.raises(InvalidAdapterError) as info:
        store.add_revision("victim", folder)
    assert_names(info.value, POISON)
    assert store.get("victim").revision_numbers() == [1]
    assert sorted(p.name for p in (store.skill_dir("victim") / "revs").iterdir()) == ["1"]


def poisoned_export(source: SkillStore, name: str, tiny: Any, out: Path) -> Path:
    """A valid export of `name` whose weights then gain a base tensor, with revision.json's checksums rewritten to
    match: the archive passes every earlier check (members, checksums, safetensors), only the content check is left."""
    valid = source.export(name, out.with_suffix(".valid.tar.gz"))
    members = []
    with tarfile.open(valid) as tar:
        for member in tar.getmembers():
            handle = tar.extractfile(member)
            assert handle is not None
            members.append((member.name, handle.read()))
    files = dict(members)
    prefix = f"{name}/revs/1/"
    tensors = load_file(str(source.revision_dir(name, 1) / WEIGHTS))
    tensors[POISON] = zeros_like_base(tiny, POISON)
    buffer = io.BytesIO()
    from safetensors.torch import save

    files[prefix + WEIGHTS] = save(tensors, metadata={"format": "pt"})
    record = json.loads(files[prefix + "revision.json"])
    record["files"][WEIGHTS] = hashlib.sha256(files[prefix + WEIGHTS]).hexdigest()
    files[prefix + "revision.json"] = json.dumps(record).encode()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for member_name, data in files.items():
            info = tarfile.TarInfo(member_name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out.write_bytes(buffer.getvalue())
    return out


def test_import_archive_refuses_a_foreign_tensor(store: SkillStore, tiny: Any, tmp_path: Path) -> None:
    source = SkillStore(tmp_path / "source", base_fingerprint=tiny.fingerprint)
    source.create("incoming", qv_adapter(tiny, tmp_path / "a"), kind="style")
    archive = poisoned_export(source, "incoming", tiny, tmp_path / "incoming.tar.gz")
    with pytest.raises(InvalidAdapterError) as info:
        store.import_archive(archive)
    assert_names(info.value, POISON)
    assert not store.exists("incoming")
    assert not [p for p in (store.root / ".tmp").rglob("*") if p.is_file()]


def test_pack_install_without_trust_refuses_a_foreign_tensor(store: SkillStore, tiny: Any, tmp_path: Path) -> None:
    source = SkillStore(tmp_path / "source", base_fingerprint=tiny.fingerprint)
    source.create("incoming", qv_adapter(tiny, tmp_path / "a"), kind="style")
    pack = create_pack("evil-pack", ["incoming"], [], tmp_path / "pack", store=source)
    archive = pack / "skills" / "incoming.tar.gz"
    old_sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    poisoned_export(source, "incoming", tiny, archive)
    toml = pack / "pack.toml"
    toml.write_text(toml.read_text().replace(old_sha, hashlib.sha256(archive.read_bytes()).hexdigest()))
    packs_dir = tmp_path / "packs"
    with pytest.raises(InvalidAdapterError) as info:
        install_pack(pack, store, packs_dir)
    assert_names(info.value, POISON)
    assert not store.exists("incoming")
    assert not (packs_dir / "evil-pack").exists()


def test_a_planted_base_tensor_never_reaches_the_base(store: SkillStore, fresh_base: Any, tmp_path: Path) -> None:
    """A store written by an older version may already hold a poisoned revision (checksums match): loading it must
    be refused before anything reaches the model, and the base stays bit-identical."""
    store.create("good", qv_adapter(fresh_base, tmp_path / "g"), kind="style")
    store.create("victim", qv_adapter(fresh_base, tmp_path / "v", seed=1), kind="style")
    plant(store, "victim", add={POISON: zeros_like_base(fresh_base, POISON)})
    before = base_weights_digest(fresh_base.model)
    residency = Residency(fresh_base.model, store, max_hot=1)
    residency.activate("good")
    error: BaseException | None = None
    try:
        residency.activate("victim")
    except CorruptSkillError as raised:
        error = raised
    residency.evict("good")
    assert base_weights_digest(residency.model) == before, "the adapter file changed the shared base"
    assert error is not None, "a poisoned revision was loaded"
    assert_names(error, POISON)
    with pytest.raises(CorruptSkillError, match="victim") as info:
        store.read_adapter("victim")
    assert_names(info.value, POISON)
    assert any(POISON in problem for problem in store.verify("victim"))


def test_a_poisoned_training_candidate_is_refused(store: SkillStore, fresh_base: Any, tmp_path: Path) -> None:
    store.create("good", qv_adapter(fresh_base, tmp_path / "g"), kind="style")
    candidate = rewrite(
        qv_adapter(fresh_base, tmp_path / "c", seed=2), add={POISON: zeros_like_base(fresh_base, POISON)}
    )
    before = base_weights_digest(fresh_base.model)
    residency = Residency(fresh_base.model, store)
    residency.activate("good")
    with pytest.raises(InvalidAdapterError) as info, residency.trial(candidate):
        pass
    assert_names(info.value, POISON)
    assert base_weights_digest(residency.model) == before
    assert set(residency.model.peft_config) == {"sk_good_r1"}


@pytest.mark.parametrize("planted", [False, True])
def test_a_config_whose_rank_disagrees_with_the_tensors_is_one_line(
    store: SkillStore, fresh_base: Any, tmp_path: Path, planted: bool
) -> None:
    """adapter_config.json says r=4, the tensors have rank 8: refused at create; planted, refused at load."""
    if planted:
        store.create("skill", qv_adapter(fresh_base, tmp_path / "a"), kind="style")
        plant(store, "skill", config={"r": 4})
        residency = Residency(fresh_base.model, store)
        with pytest.raises(CorruptSkillError) as info:
            residency.load("skill")
        assert not isinstance(residency.model, PeftModel)  # nothing stays behind
    else:
        folder = rewrite(qv_adapter(fresh_base, tmp_path / "a"), config={"r": 4})
        with pytest.raises(InvalidAdapterError) as error:
            store.create("skill", folder, kind="style")
        info = error  # type: ignore[assignment]
    text = str(info.value)
    assert "\n" not in text and len(text) < 400, text
    assert "rank 8" in text and "r=4" in text, text


def test_a_shape_that_does_not_fit_the_base_is_refused_at_load(
    store: SkillStore, fresh_base: Any, tmp_path: Path
) -> None:
    """Names and ranks pass the store (it has no model); the load checks every shape against the module it targets."""
    store.create("skill", qv_adapter(fresh_base, tmp_path / "a"), kind="style")
    key = QV.format(module="v_proj", part="B")  # v_proj's output is 32 wide on the tiny base
    plant(store, "skill", add={key: torch.zeros(64, 8)})
    residency = Residency(fresh_base.model, store)
    with pytest.raises(CorruptSkillError) as info:
        residency.load("skill")
    assert_names(info.value, key)
    assert "(32, 8)" in str(info.value)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"layer_replication": [[0, 2], [0, 2]]}, "layer_replication"),
        ({"init_lora_weights": "pissa"}, "init_lora_weights"),  # PiSSA rewrites the base's weights when added
        ({"bias": "all"}, "bias"),
        ({"peft_type": "IA3"}, "LORA"),
        ({"r": 0}, "r"),
    ],
)
def test_configs_that_reach_beyond_lora_are_refused(
    store: SkillStore, fresh_base: Any, tmp_path: Path, change: dict[str, Any], needle: str
) -> None:
    folder = rewrite(qv_adapter(fresh_base, tmp_path / "a"), config=change)
    with pytest.raises(InvalidAdapterError, match=needle):
        store.create("skill", folder, kind="style")
    # planted in an old store, the load refuses it and the base is untouched
    store.create("planted", qv_adapter(fresh_base, tmp_path / "b"), kind="style")
    plant(store, "planted", config=change)
    before = base_weights_digest(fresh_base.model)
    residency = Residency(fresh_base.model, store)
    with pytest.raises(CorruptSkillError):
        residency.load("planted")
    assert base_weights_digest(residency.model) == before


# ------------------------------------------------------------------------------------------------ what must pass


def peft_saved(tiny: Any, folder: Path, **options: Any) -> tuple[Path, torch.Tensor]:
    """An adapter made and saved by peft itself (random init) on a copy of the tiny base, and its logits there."""
    with warnings.catch_warnings():  # peft's notes on a copy of a model it wrapped before, and a deprecation
        warnings.simplefilter("ignore")
        model = get_peft_model(copy.deepcopy(tiny.model), LoraConfig(init_lora_weights=False, **options))
    model.save_pretrained(str(folder))
    return folder, logits(model.eval(), tiny)


@pytest.mark.parametrize(
    "options",
    [
        {"r": 4, "target_modules": ["q_proj", "v_proj"]},
        {"r": 4, "target_modules": ["q_proj", "v_proj"], "rank_pattern": {"v_proj": 2}, "alpha_pattern": {"q_proj": 2}},
        {"r": 2, "target_modules": r".*\.(q_proj|down_proj)"},
        {"r": 2, "target_modules": "all-linear"},
        {"r": 2, "target_modules": ["q_proj", "o_proj"], "use_dora": True},
        {"r": 2, "target_modules": ["q_proj", "v_proj"], "layers_to_transform": [1]},
    ],
    ids=["plain", "rank_pattern", "regex", "all-linear", "dora", "one-layer"],
)
def test_adapters_peft_saves_are_accepted_and_load_exactly(
    store: SkillStore, fresh_base: Any, tmp_path: Path, options: dict[str, Any]
) -> None:
    folder, expected = peft_saved(fresh_base, tmp_path / "peft", **options)
    store.create("external", folder, kind="style")
    before = base_weights_digest(fresh_base.model)
    residency = Residency(fresh_base.model, store)
    residency.activate("external")
    assert torch.allclose(logits(residency.model, fresh_base), expected, atol=1e-5)
    residency.evict("external")
    assert base_weights_digest(residency.model) == before


def test_a_regex_target_that_leaves_out_a_module_refuses_its_tensors(
    store: SkillStore, tiny: Any, tmp_path: Path
) -> None:
    folder = rewrite(qv_adapter(tiny, tmp_path / "a"), config={"target_modules": r".*\.q_proj"})
    with pytest.raises(InvalidAdapterError) as info:
        store.create("skill", folder, kind="style")
    assert "v_proj" in str(info.value)


def test_every_adapter_the_project_writes_passes(
    store: SkillStore, fresh_base: Any, adapter: Adapter, tmp_path: Path
) -> None:
    """Trained adapters, random ones, and compositions of every method written out with `materialize`."""
    store.create("trained", adapter("alpha"), kind="style")  # train_lora: all linear modules
    store.create("qv", qv_adapter(fresh_base, tmp_path / "qv"), kind="style")
    store.create(
        "down", random_adapter(fresh_base, tmp_path / "down", r=4, target_modules=("down_proj",)), kind="style"
    )
    store.create("qv2", qv_adapter(fresh_base, tmp_path / "qv2", seed=3), kind="style")
    residency = Residency(fresh_base.model, store, max_hot=4)
    composer = Composer(residency)
    specs = {
        "cat": CompositionSpec.of("trained", "qv", "down", method="cat"),
        "sum": CompositionSpec.of("qv", "down"),
        "linear": CompositionSpec.of("qv", "qv2", method="linear"),
        "svd": CompositionSpec.of("trained", "down", method="svd", svd_rank=3),
        "ties": CompositionSpec.of("qv", "qv2", method="ties", density=0.5),
    }
    for method, spec in specs.items():
        out = composer.materialize(spec, tmp_path / f"composed-{method}")
        store.create(f"composed-{method}", out, kind="style")
        store.read_adapter(f"composed-{method}")
        residency.activate(f"composed-{method}")


# ------------------------------------------------------------------------------------------------ the pure check


@pytest.fixture(scope="module")
def qv_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, torch.Tensor], Any]:
    """A peft-saved q/v adapter of the tiny base: (config, tensors, base), the oracle of what is allowed."""
    from agent.testing import tiny_base

    base = tiny_base()
    folder = qv_adapter(base, tmp_path_factory.mktemp("qv") / "a")
    return json.loads((folder / CONFIG).read_text()), load_file(str(folder / WEIGHTS)), base


PARTS = ["model", "layers", "0", "1", "self_attn", "mlp", "q_proj", "v_proj", "down_proj", "base_layer", "lora_A"]


@st.composite
def tensor_names(draw: st.DrawFn) -> str:
    """Names near the valid ones (the same pieces, reassembled), and arbitrary text."""
    if draw(st.booleans()):
        return draw(st.text(min_size=1, max_size=60))
    prefix = draw(st.sampled_from(["base_model.model.", "base_model.", "", "base_model.model.base_model.model."]))
    module = ".".join(draw(st.lists(st.sampled_from(PARTS), min_size=1, max_size=6)))
    suffix = draw(
        st.sampled_from(
            [".lora_A.weight", ".lora_B.weight", ".weight", ".bias", ".lora_embedding_A", ".lora_A", ".lora_A.weight.x"]
        )
    )
    return prefix + module + suffix


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=tensor_names(), rows=st.sampled_from([1, 8, 32, 64]))
def test_any_other_tensor_name_is_refused_and_named(qv_reference: Any, name: str, rows: int) -> None:
    from skills.adapter_check import check_adapter

    config, tensors, base = qv_reference
    check_adapter(config, tensors, label="reference", base=base.model)  # the control passes
    if name in tensors:
        return
    tensor = torch.zeros(rows, 8) if "lora_B" in name else torch.zeros(8, rows)
    for model in (None, base.model):  # without the model (store) and with it (residency)
        with pytest.raises(InvalidAdapterError) as info:
            check_adapter(config, {**tensors, name: tensor}, label="probe", base=model)
        assert repr(name)[:80].rstrip("'") in str(info.value)


def test_a_missing_tensor_is_refused_at_load(qv_reference: Any) -> None:
    from skills.adapter_check import check_adapter

    config, tensors, base = qv_reference
    key = QV.format(module="q_proj", part="B")
    incomplete = {k: v for k, v in tensors.items() if k != key}
    with pytest.raises(InvalidAdapterError, match="lora_B"):
        check_adapter(config, incomplete, label="probe")  # lora_A without its lora_B: even without the model
    incomplete = {k: v for k, v in tensors.items() if "layers.1.self_attn.q_proj" not in k}
    with pytest.raises(InvalidAdapterError, match=r"layers\.1\.self_attn\.q_proj"):
        check_adapter(config, incomplete, label="probe", base=base.model)


# ------------------------------------------------------------------------------------------------ the base checksum


def test_the_base_is_bit_identical_after_everything_a_store_of_skills_does(
    store: SkillStore, fresh_base: Any, adapter: Adapter, tmp_path: Path
) -> None:
    """Load, switch, compose (built, live, every method), merge for decoding, mixed batches, trials and eviction of
    every skill, with max_hot small enough that eviction happens all along: the base's digest never moves."""
    base = fresh_base
    for name in ("alpha", "beta", "gamma"):
        store.create(name, adapter(name), kind="style")
    store.create("qv", qv_adapter(base, tmp_path / "qv"), kind="style")
    store.create("down", random_adapter(base, tmp_path / "down", r=4, target_modules=("down_proj",)), kind="style")
    external, _ = peft_saved(base, tmp_path / "dora", r=2, target_modules=["q_proj", "o_proj"], use_dora=True)
    store.create("dora", external, kind="style")
    candidate = qv_adapter(base, tmp_path / "candidate", seed=5)  # made before the residency wraps the base
    before = base_weights_digest(base.model)
    residency = Residency(base.model, store, max_hot=2, max_warm=2)
    local = LocalChatModel(base, residency)
    names = [m.name for m in store.list()]

    def unchanged(step: str) -> None:
        assert base_weights_digest(residency.model) == before, f"the base changed after {step}"

    for name in names:
        for turn in range(2):  # the second turn with the same skill decodes merged
            local.generate(MESSAGES, skills=[(name, 1)], max_new_tokens=2)
            unchanged(f"{name} turn {turn}")
    for pair in (["alpha", "qv"], ["down", "qv"]):
        for turn in range(2):
            local.generate(MESSAGES, skills=[(pair[0], 1), (pair[1], 1)], max_new_tokens=2)
            unchanged(f"{pair} turn {turn}")
    composer = local.composer
    for spec in (
        CompositionSpec.of("alpha", "beta", method="linear"),
        CompositionSpec.of("alpha", "beta", method="svd", svd_rank=2),
        CompositionSpec.of("alpha", "beta", method="ties", density=0.5),
    ):
        composer.activate(spec)
        unchanged(spec.method)
    composer.activate_live(CompositionSpec.of("qv", "down"))
    unchanged("live sum")
    mixed = [ChatRequest(messages=MESSAGES, skills=s, max_new_tokens=2) for s in ([], [("qv", 1)], [("down", 1)])]
    local.generate_batch(mixed)
    unchanged("mixed batch")
    with residency.trial(candidate):
        pass
    unchanged("trial")
    with residency.merged(residency.load("gamma")):
        pass
    unchanged("merge")
    for key in residency.hot() + residency.warm():
        residency.evict(*key)
        residency.evict(*key)  # warm -> cold
    unchanged("evicting every skill")
    assert residency.stats.hot_evictions > len(names) and residency.stats.merges >= len(names)
    assert base_weights_digest(residency.model.unload()) == before


def test_training_from_a_poisoned_init_adapter_is_refused(fresh_base: Any, tmp_path: Path) -> None:
    """`train_lora(init_from=...)` continues from an adapter folder: the same check applies before any step."""
    from skills import ChatExample, TrainConfig, train_lora

    init = rewrite(qv_adapter(fresh_base, tmp_path / "init"), add={POISON: zeros_like_base(fresh_base, POISON)})
    before = base_weights_digest(fresh_base.model)
    with pytest.raises(InvalidAdapterError) as info:
        train_lora(
            fresh_base.model,
            fresh_base.tokenizer,
            [ChatExample.from_pair("ping", "pong")],
            tmp_path / "out",
            config=TrainConfig(steps=1, batch_size=1),
            init_from=init,
            progress=False,
        )
    assert_names(info.value, POISON)
    assert base_weights_digest(fresh_base.model) == before
