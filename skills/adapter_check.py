"""What an adapter file may hold: exactly the LoRA tensors its adapter_config.json implies, and nothing else.

peft loads an adapter with `set_peft_model_state_dict`, which is `load_state_dict(strict=False)` on the whole shared
model: a tensor named like a base weight (`base_model.model.model.layers.15.mlp.down_proj.weight`) silently replaces
that weight for every skill and every user of the process, and stays after the skill is evicted. Config options can
reach as far (PiSSA initialisation rewrites the base's weights, `layer_replication` rebuilds its layer list,
`modules_to_save` ships whole modules). So every path that writes or loads an adapter calls `check_adapter` first:
the store when a revision is created, added or imported (packs import through the store), `read_adapter`, and
residency before anything reaches the model.

Allowed, per module the config targets: `lora_A.weight` (r, in_features) and `lora_B.weight` (out_features, r) of a
Linear layer, `lora_embedding_A` (r, num_embeddings) and `lora_embedding_B` (embedding_dim, r) of an Embedding, and
DoRA's `lora_magnitude_vector` (out_features,) when the config says `use_dora`; r is the config's rank, or its
`rank_pattern` entry for that module. Without the model (the store), names, ranks and pairs are checked; with it
(residency), every shape against the module it targets, and that no targeted module lacks its tensors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

from skills.errors import InvalidAdapterError
from skills.files import ADAPTER_CONFIG

PREFIX = "base_model.model."  # peft's names: the PeftModel's `base_model` (LoraModel), then its `model`
# The tensor names peft saves for one adapted module (the adapter's own name removed), by kind.
_SUFFIXES = {
    ".lora_A.weight": "A",
    ".lora_B.weight": "B",
    ".lora_embedding_A": "embedding_A",
    ".lora_embedding_B": "embedding_B",
    ".lora_magnitude_vector": "magnitude",
}
_PAIRS = (("A", "B"), ("embedding_A", "embedding_B"))
# Children peft adds beside a model's own modules (a wrapped `modules_to_save` module keeps its original inside).
_PEFT_CHILDREN = frozenset({"modules_to_save", "original_module"})
# LoraConfig options of plain LoRA, honoured as given. Every other option must keep peft's default: each one adds
# tensors or behaviour beyond "B A added to a frozen base" (modules_to_save, trainable tokens, layer replication...).
_PLAIN_OPTIONS = frozenset(
    {
        "r",
        "lora_alpha",
        "lora_dropout",
        "target_modules",
        "exclude_modules",
        "layers_to_transform",
        "layers_pattern",
        "rank_pattern",
        "alpha_pattern",
        "use_rslora",
        "use_dora",
        "fan_in_fan_out",
        "init_lora_weights",
        "inference_mode",
        "task_type",
        "base_model_name_or_path",
        "revision",
        "auto_mapping",
        "peft_version",
    }
)
# How training started, harmless once the trained weights are loaded. The others (pissa, olora, corda, loftq, ...)
# rewrite the base's weights when the adapter is added: such an adapter only works on a modified base.
_SAFE_INITS = (True, False, "gaussian", "eva", "orthogonal")
_FIX = "an adapter may hold only the lora_A/lora_B weights of its target modules; re-save it with peft"


def lora_config(config: Mapping[str, Any], *, label: str) -> Any:
    """The `peft.LoraConfig` of an adapter_config.json dict, after refusing anything that is not plain LoRA.

    Keys this peft version does not know are ignored (configs saved by other versions load); `init_lora_weights` is
    reset to peft's neutral default, since the file's weights replace the initialisation anyway.
    """
    from peft import LoraConfig

    if not isinstance(config, Mapping):
        raise InvalidAdapterError(f"{label}: {ADAPTER_CONFIG} is not a JSON object")
    if config.get("peft_type") != "LORA":
        raise InvalidAdapterError(
            f"{label}: {ADAPTER_CONFIG} is not a LoRA config: peft_type is {_short(config.get('peft_type'))}, "
            "expected 'LORA'",
            hint="habitloop loads LoRA adapters only",
        )
    # runtime_config holds how this process runs adapters (never saved by peft): not the file's to choose
    fields = {f.name: f for f in dataclasses.fields(LoraConfig) if f.name not in ("runtime_config", "peft_type")}
    for key, value in config.items():
        field = fields.get(key)
        if field is None or key in _PLAIN_OPTIONS:
            continue
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        if value != default:
            raise InvalidAdapterError(
                f"{label}: {ADAPTER_CONFIG} sets {key}={_short(value)}, which is not plain LoRA "
                "(it would load or change more than the adapter's own LoRA weights)",
                hint="train the adapter as plain LoRA (no modules_to_save, biases or extra trainable parts)",
            )
    init = config.get("init_lora_weights", True)
    if not any(init is safe or (isinstance(init, str) and init == safe) for safe in _SAFE_INITS):
        raise InvalidAdapterError(
            f"{label}: {ADAPTER_CONFIG} sets init_lora_weights={_short(init)}, which rewrites the base's weights "
            "when the adapter is added",
            hint="convert it to plain LoRA first (peft: save_pretrained(path_initial_model_for_weight_conversion=))",
        )
    try:
        lora = LoraConfig(**{k: v for k, v in config.items() if k in fields and k != "peft_version"})
    except (TypeError, ValueError, KeyError) as error:
        raise InvalidAdapterError(f"{label}: {ADAPTER_CONFIG} is not a valid LoRA config: {_short(error)}") from error
    ranks = [lora.r, *(lora.rank_pattern or {}).values()]
    if any(not isinstance(r, int) or isinstance(r, bool) or r < 1 for r in ranks):
        raise InvalidAdapterError(f"{label}: {ADAPTER_CONFIG} has a rank r that is not a positive integer: {ranks}")
    if not lora.target_modules:
        raise InvalidAdapterError(f"{label}: {ADAPTER_CONFIG} names no target_modules", hint=_FIX)
    lora.init_lora_weights = True
    lora.inference_mode = True
    return lora


def check_adapter(config: Mapping[str, Any], tensors: Mapping[str, Any], *, label: str, base: Any = None) -> Any:
    """Refuse (`InvalidAdapterError`, naming the first foreign tensor) anything but the LoRA tensors `config` implies.

    `tensors`: name -> torch.Tensor as saved by peft. `base`: the model the adapter will be added to (a transformers
    model or a `PeftModel` already holding other adapters); given, every shape is checked against the module it
    targets and every targeted module must have its tensors. Returns the validated `peft.LoraConfig`.
    """
    lora = lora_config(config, label=label)
    found: dict[str, dict[str, Any]] = {}  # module path -> kind -> tensor
    for key in sorted(tensors):
        tensor = tensors[key]
        module, kind = _parse(key, label)
        if not _targeted(lora, module):
            raise _foreign(label, key, f"module {module!r} is not in target_modules {_short(_targets(lora))}")
        if kind == "magnitude" and not lora.use_dora:
            raise _foreign(label, key, "a DoRA magnitude, but adapter_config.json does not set use_dora")
        if not tensor.is_floating_point():
            raise _foreign(label, key, f"its dtype is {tensor.dtype}, not a floating-point type")
        rank = rank_of(lora, module)
        shape = tuple(tensor.shape)
        if kind == "magnitude":
            ok, says = len(shape) == 1, "one dimension"
        else:
            axis = 0 if kind in ("A", "embedding_A") else 1
            ok, says = len(shape) == 2 and shape[axis] == rank, f"r={rank} for this module"
            if len(shape) == 2 and not ok:
                raise _foreign(label, key, f"it has rank {shape[axis]}, but adapter_config.json says {says}")
        if not ok:
            raise _foreign(label, key, f"its shape {shape} does not fit: adapter_config.json says {says}")
        found.setdefault(module, {})[kind] = tensor
    for module, kinds in found.items():
        for first, second in _PAIRS:
            for have, lacks in ((first, second), (second, first)):
                if have in kinds and lacks not in kinds:
                    raise _foreign(label, _key(module, have), f"there is no lora_{lacks} for {module!r} beside it")
        if "magnitude" in kinds and "A" not in kinds:
            raise _foreign(label, _key(module, "magnitude"), f"there is no lora_A/lora_B for {module!r} beside it")
    if base is not None:
        _check_against(lora, found, base, label)
    return lora


def targets_module(lora: Any, module: str, *, output_layer: str | None = None) -> bool:
    """Whether peft would put the adapter of config `lora` on the Linear layer `module` (`output_layer`: the base's
    output head, which "all-linear" leaves out): peft's own matcher, for runtimes that place adapters themselves."""
    return _targeted(lora, module, output_layer=output_layer)


def rank_of(lora: Any, module: str) -> int:
    """The rank of the adapter on `module` (its `rank_pattern` entry, else r), found as peft finds it."""
    from peft.utils.other import get_pattern_key

    pattern: dict[str, int] = dict(lora.rank_pattern or {})
    return int(pattern.get(get_pattern_key(list(pattern), module), lora.r))


# ------------------------------------------------------------------------------------------------ internals


def _parse(key: str, label: str) -> tuple[str, str]:
    """(module path relative to the base model, kind) of a peft tensor name; foreign names are refused."""
    if not isinstance(key, str) or not key.startswith(PREFIX):
        raise _foreign(label, key, f"not under {PREFIX!r}")
    for suffix, kind in _SUFFIXES.items():
        if key.endswith(suffix):
            module = key[len(PREFIX) : -len(suffix)]
            parts = module.split(".")
            if module and all(parts) and not any(p == "base_layer" or p.startswith("lora_") for p in parts):
                return module, kind
            break
    raise _foreign(label, key, "not a lora_A/lora_B weight")


def _targets(lora: Any) -> Any:
    targets = lora.target_modules
    return sorted(targets) if isinstance(targets, set | frozenset | list | tuple) else targets


def _all_linear(lora: Any) -> bool:
    from peft.utils.constants import INCLUDE_LINEAR_LAYERS_SHORTHAND

    return isinstance(lora.target_modules, str) and lora.target_modules.lower() == INCLUDE_LINEAR_LAYERS_SHORTHAND


def _targeted(lora: Any, module: str, *, output_layer: str | None = None) -> bool:
    """Whether peft would put this adapter on `module` (peft's own matcher: lists, regexes, layers_to_transform)."""
    from peft.tuners.tuners_utils import check_target_module_exists

    if _all_linear(lora):  # peft expands it to every linear layer but the output head; the model checks the type
        return module.split(".")[-1] != "lm_head" and module != output_layer
    return bool(check_target_module_exists(lora, module))


def _check_against(lora: Any, found: dict[str, dict[str, Any]], base: Any, label: str) -> None:
    """Every tensor's shape against the module it targets, and no targeted module without its tensors."""
    import torch
    from peft import PeftModel
    from peft.tuners.tuners_utils import BaseTunerLayer

    model: Any = base.base_model.model if isinstance(base, PeftModel) else base
    layers = dict(_base_modules(model, BaseTunerLayer))
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    output_name = next((name for name, layer in layers.items() if layer is output), None)
    expected: dict[str, dict[str, tuple[int, ...]]] = {}
    for name, layer in layers.items():
        if not _targeted(lora, name, output_layer=output_name):
            continue
        rank = rank_of(lora, name)
        if isinstance(layer, torch.nn.Linear):
            shapes: dict[str, tuple[int, ...]] = {"A": (rank, layer.in_features), "B": (layer.out_features, rank)}
            if lora.use_dora:
                shapes["magnitude"] = (layer.out_features,)
            expected[name] = shapes
        elif isinstance(layer, torch.nn.Embedding):
            expected[name] = {"embedding_A": (rank, layer.num_embeddings), "embedding_B": (layer.embedding_dim, rank)}
        elif not _all_linear(lora):
            raise InvalidAdapterError(
                f"{label}: target_modules selects {name!r}, a {type(layer).__name__}, not a Linear or Embedding layer",
                hint=_FIX,
            )
    for module, kinds in sorted(found.items()):
        for kind, tensor in sorted(kinds.items()):
            key = _key(module, kind)
            if module not in expected:
                raise _foreign(label, key, f"the base has no Linear or Embedding layer {module!r}")
            want = expected[module].get(kind)
            if want is None:
                raise _foreign(label, key, f"{module!r} is a {type(model.get_submodule(module)).__name__}")
            if tuple(tensor.shape) != want:
                raise _foreign(label, key, f"its shape {tuple(tensor.shape)} does not fit the base, which needs {want}")
    for module, shapes in sorted(expected.items()):
        for kind in sorted(shapes):
            if kind not in found.get(module, {}):
                raise InvalidAdapterError(
                    f"{label}: {_key(module, kind)!r} is missing: adapter_config.json targets {module!r}",
                    hint="the adapter is incomplete or was saved for another architecture; retrain it on this base",
                )


def _base_modules(model: Any, tuner_layer: Any) -> Iterator[tuple[str, Any]]:
    """(name, module) of the base's own modules, a peft-wrapped layer given as its base layer.

    Never descends into what peft adds (`lora_A`, `base_layer`, ...): `named_modules()` would also walk every loaded
    adapter's modules, so this check would cost more with every hot skill (64 hot: ~64x the base's module count).
    """
    stack: list[tuple[str, Any]] = [("", model)]
    while stack:
        prefix, module = stack.pop()
        if prefix:
            yield prefix, module.get_base_layer() if isinstance(module, tuner_layer) else module
        if isinstance(module, tuner_layer):
            continue  # its children are the base layer and the adapters' own modules
        for child_name, child in reversed(list(module.named_children())):
            if child_name in _PEFT_CHILDREN:
                continue
            stack.append((f"{prefix}.{child_name}" if prefix else child_name, child))


def _key(module: str, kind: str) -> str:
    return PREFIX + module + next(suffix for suffix, k in _SUFFIXES.items() if k == kind)


def _foreign(label: str, key: object, reason: str) -> InvalidAdapterError:
    return InvalidAdapterError(
        f"{label}: tensor {_short(key)} is not a LoRA tensor of this adapter: {reason}", hint=_FIX
    )


def _short(value: object, limit: int = 160) -> str:
    text = repr(value) if not isinstance(value, BaseException) else str(value).replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."
