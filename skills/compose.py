"""Composition: several skills working as one adapter on the shared base.

A `CompositionSpec` names the skills (each at a revision, with a weight) and a method; the `Composer` builds the
combined adapter with peft's own `add_weighted_adapter` inside the residency's `PeftModel`, caches it by the spec's
`key`, and activates it. Methods are registered (`register_composition_method`), never discovered:

- `sum`: the exact sum of the skills' updates, sum_i w_i * B_i A_i * scale_i. `activate` builds it as one adapter by
  concatenating the LoRA ranks (peft's `cat`: A = [w_1 s_1 A_1; w_2 s_2 A_2; ...], B = [B_1, B_2, ...], so
  B A = sum_i w_i s_i B_i A_i exactly, at rank sum_i r_i). `activate_live` gets the same sum without building
  anything, by making the skills' own adapters active together (peft's multi-adapter activation; weights must be 1).
- `cat`: the same adapter as `sum` builds, under the name of its construction.
- `linear`: w-weighted averages of the A and of the B matrices separately; cheap, rank unchanged, but only an
  approximation of the sum (B A of the averages has cross terms). Needs equal ranks.
- `svd`: the exact weighted sum of the full updates, truncated back to rank `svd_rank` (default: the largest rank)
  with an SVD per layer. Slowest to build (2.2 s on SmolLM2 vs 0.16 s for cat).
- `ties`: TIES merging of the A and B matrices (keep the top `density` fraction by magnitude, elect a sign per entry,
  average the agreeing entries). Needs equal ranks and `density`.

Skills that adapt different modules compose: peft gives the combined adapter the union of the target modules, and in
a module only some skills adapt, only theirs contribute (with `cat`, the unused rank slots stay zero, so the sum is
still exact). Skills of another base are refused by the store (`BaseMismatchError`) before anything is loaded.

How this sits with residency's bounds: the components are loaded through `Residency.load`, so they count against
`max_hot` like any skill, and all of a composition's components must be hot together while it is built (at most
`max_hot` components). The composed adapters are not skills: they are never listed in `Residency.hot()` nor evicted
by it; the composer keeps at most `max_cached` of them (LRU, removed with peft's `delete_adapter`). So the model holds
at most `max_hot + max_cached` adapters besides a training or trial adapter. A composed adapter is its own copy of
the weights: evicting one of its components later does not change it. A live sum (`activate_live`) has no copy: it
lasts until another adapter is activated or the residency evicts one of its components.

`materialize` writes a composition as one ordinary PEFT adapter folder (a `sum` through `cat`), which vLLM or LoRAX
can serve unchanged and `SkillStore.create` can store as a skill.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from skills.errors import UserError
from skills.instances import split_name
from skills.residency import Residency
from skills.train import save_adapter

# ---------------------------------------------------------------------------------------------------------------
# Methods: registered, not discovered.

BuildFn = Callable[[Any, list[str], list[float], str, "CompositionSpec"], None]
"""`build(peft_model, adapter_names, weights, new_name, spec)`: add one adapter called `new_name` to the model."""


@dataclass(frozen=True)
class CompositionMethod:
    """A way to combine adapters, as registered."""

    name: str
    build: BuildFn
    description: str = ""
    live: bool = False  # the components can also run together unbuilt (`Composer.activate_live`): an exact sum
    uses: frozenset[str] = frozenset()  # the CompositionSpec parameters this method reads
    requires: frozenset[str] = frozenset()  # ... of which these must be given


_METHODS: dict[str, CompositionMethod] = {}
_METHOD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_PARAMETERS = ("density", "svd_rank")  # CompositionSpec fields that belong to a method


def register_composition_method(
    name: str,
    build: BuildFn,
    *,
    description: str = "",
    live: bool = False,
    uses: Sequence[str] = (),
    requires: Sequence[str] = (),
) -> CompositionMethod:
    """Add a composition method. Refuses duplicates, so that no plugin silently redefines a method.

    `build` must add exactly one adapter named as asked to the `PeftModel` it is given (peft's `add_weighted_adapter`
    is the usual way) and raise `UserError` for inputs it cannot combine. `uses` and `requires` name the spec
    parameters (`density`, `svd_rank`) the method reads and those it cannot do without.
    """
    if not _METHOD_NAME.fullmatch(name):
        raise UserError(f"invalid composition method name {name!r}", hint="use a-z, 0-9 and '_', at most 32")
    if name in _METHODS:
        raise UserError(f"composition method {name!r} is already registered", hint="pick another name")
    unknown = sorted((set(uses) | set(requires)) - set(_PARAMETERS))
    if unknown or not set(requires) <= set(uses):
        raise UserError(
            f"composition method {name!r}: unknown or unused parameters {unknown or sorted(requires)}",
            hint=f"parameters are {', '.join(_PARAMETERS)}; `requires` must be part of `uses`",
        )
    method = CompositionMethod(name, build, description, live, frozenset(uses), frozenset(requires))
    _METHODS[name] = method
    return method


def composition_methods() -> dict[str, CompositionMethod]:
    """The registered methods by name."""
    return dict(_METHODS)


# ---------------------------------------------------------------------------------------------------------------
# What to compose.


class ComponentSpec(BaseModel):
    """One skill in a composition."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    skill: str = Field(description="the skill's name in the store: shared `name` or personal `instance/name`")
    revision: int | None = Field(None, ge=1, description="a committed revision; None: the current one, when used")
    weight: float = Field(1.0, allow_inf_nan=False, description="multiplies the skill's update (may be negative)")

    @field_validator("skill")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        split_name(value)  # a shared name or an instance's qualified one; both parts validated
        return value

    @property
    def ref(self) -> str:
        """`skill@revision` (`skill@current` while unpinned)."""
        return f"{self.skill}@{'current' if self.revision is None else self.revision}"


class CompositionSpec(BaseModel):
    """Which skills, at which revisions and weights, combined how. Immutable; identified by `key`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    components: tuple[ComponentSpec, ...] = Field(min_length=1, description="each skill once; order does not matter")
    method: str = Field("sum", description="a registered composition method (see composition_methods())")
    density: float | None = Field(None, gt=0, le=1, description="ties: fraction of entries kept per matrix")
    svd_rank: int | None = Field(None, ge=1, description="svd: rank of the result (default: the largest rank)")

    @model_validator(mode="after")
    def _check(self) -> CompositionSpec:
        method = _METHODS.get(self.method)
        if method is None:
            raise ValueError(f"method {self.method!r} is not registered; use one of {sorted(_METHODS)}")
        for parameter in _PARAMETERS:
            given = getattr(self, parameter) is not None
            if parameter in method.requires and not given:
                raise ValueError(f"method {self.method!r} needs {parameter}")
            if given and parameter not in method.uses:
                raise ValueError(f"method {self.method!r} does not use {parameter}; leave it unset")
        refs = [component.ref for component in self.components]
        duplicates = sorted({ref for ref in refs if refs.count(ref) > 1})
        if duplicates:
            raise ValueError(f"components name {', '.join(duplicates)} more than once; give each once")
        return self

    @classmethod
    def of(cls, *skills: str | tuple[str, int | None] | tuple[str, int | None, float], **options: Any) -> Self:
        """Shorthand: `CompositionSpec.of("a", ("b", 2), ("c", None, 0.5), method="cat")`."""
        components = []
        for item in skills:
            parts = (item,) if isinstance(item, str) else item
            components.append(ComponentSpec(**dict(zip(("skill", "revision", "weight"), parts, strict=False))))
        return cls(components=tuple(components), **options)

    @property
    def key(self) -> str:
        """A stable identity: sha256 of the canonical JSON of (sorted skill@revision and weight, method, parameters).

        Component order does not count: every method here is symmetric in its inputs.
        """
        canonical = {
            "components": sorted([c.skill, c.revision or 0, c.weight] for c in self.components),
            "method": self.method,
            **{parameter: getattr(self, parameter) for parameter in _PARAMETERS},
        }
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    @property
    def adapter_name(self) -> str:
        """The composed adapter's name in the model (no '.', which torch refuses, and not inside peft's "lora_")."""
        return f"cmp_{self.key.removeprefix('sha256:')[:16]}"

    def sorted_components(self) -> tuple[ComponentSpec, ...]:
        """Components in key order, so one key always builds the same adapter layout."""
        return tuple(sorted(self.components, key=lambda c: (c.skill, c.revision or 0, c.weight)))


# ---------------------------------------------------------------------------------------------------------------
# The built-in methods: all of them peft's add_weighted_adapter.


def _equal_ranks(model: Any, adapters: list[str], method: str) -> None:
    ranks = {name: _max_rank(model.peft_config[name]) for name in adapters}
    if len(set(ranks.values())) > 1:
        raise UserError(
            f"composition method {method!r} needs adapters of one rank, got {sorted(set(ranks.values()))}",
            hint="use 'cat' (exact: ranks add up) or 'svd' (the exact sum truncated to one rank)",
        )


def _max_rank(config: Any) -> int:
    return max([int(config.r), *(int(r) for r in (config.rank_pattern or {}).values())])


def _weighted(combination_type: str) -> BuildFn:
    """A builder that calls peft's `add_weighted_adapter` with one combination type."""

    def build(model: Any, adapters: list[str], weights: list[float], name: str, spec: CompositionSpec) -> None:
        if combination_type in ("linear", "ties"):
            _equal_ranks(model, adapters, spec.method)
        options: dict[str, Any] = {}
        if combination_type == "svd":
            options["svd_rank"] = spec.svd_rank
        if combination_type == "ties":
            options["density"] = spec.density
        model.add_weighted_adapter(adapters, weights, name, combination_type=combination_type, **options)

    return build


register_composition_method(
    "sum", _weighted("cat"), description="the exact sum of the updates (built by concatenating ranks)", live=True
)
register_composition_method("cat", _weighted("cat"), description="concatenated ranks: the exact sum, at rank sum(r)")
register_composition_method(
    "linear", _weighted("linear"), description="weighted averages of the A and of the B matrices (equal ranks)"
)
register_composition_method(
    "svd", _weighted("svd"), description="the exact sum truncated to svd_rank by SVD", uses=("svd_rank",)
)
register_composition_method(
    "ties",
    _weighted("ties"),
    description="TIES merge of the A and of the B matrices at `density` (equal ranks)",
    uses=("density",),
    requires=("density",),
)


# ---------------------------------------------------------------------------------------------------------------
# The composer.


class ComposerStats(BaseModel):
    """Counters, for tests and benchmarks."""

    builds: int = 0  # composed adapters added to the model
    hits: int = 0  # activations served from the cache
    evictions: int = 0  # composed adapters deleted to stay within max_cached
    live: int = 0  # activate_live calls


class Composer:
    """Builds, caches and activates compositions inside a `Residency`'s shared model."""

    def __init__(self, residency: Residency, *, max_cached: int = 4) -> None:
        if max_cached < 1:
            raise UserError("max_cached must be at least 1")
        self.residency = residency
        self.max_cached = max_cached
        self._cache: OrderedDict[str, str] = OrderedDict()  # key -> adapter name, least recently used first
        self._owner: Any = None  # the PeftModel the cached adapters live in
        self.stats = ComposerStats()

    @property
    def model(self) -> Any:
        """The shared model (the residency's)."""
        return self.residency.model

    def resolve(self, spec: CompositionSpec) -> CompositionSpec:
        """`spec` with every revision pinned (unpinned ones to the skill's current revision)."""
        store = self.residency.store
        components = tuple(
            c if c.revision is not None else c.model_copy(update={"revision": store.get(c.skill).current})
            for c in spec.components
        )
        try:
            return CompositionSpec(**{**spec.model_dump(exclude={"components"}), "components": components})
        except ValidationError as error:  # e.g. "a" and "a@3" when 3 is current: the same skill twice
            raise UserError(f"cannot compose {_describe(spec)}: {error.errors()[0]['msg']}") from error

    def cached(self) -> list[str]:
        """Names of the composed adapters in the model, least recently used first."""
        self._sync()
        return list(self._cache.values())

    def activate(self, spec: CompositionSpec) -> str:
        """Build the composition if it is not cached, make it the active adapter, and return its adapter name."""
        key, name = self._build(spec)
        self.residency.activate_adapter(name)
        self._evict(keep=key)  # after the switch, so the composition active before may go
        return name

    def activate_live(self, spec: CompositionSpec) -> list[str]:
        """Run a `sum` unbuilt: the skills' own adapters active together. Returns their adapter names.

        Nothing is built or cached. It lasts until another adapter is activated or the residency evicts one of the
        components; a composition that must outlive that, be named per request, or be served elsewhere is `activate`d
        or `materialize`d instead.
        """
        spec = self.resolve(spec)
        if not _METHODS[spec.method].live:
            raise UserError(f"method {spec.method!r} builds a new adapter", hint="use activate() or method='sum'")
        if any(c.weight != 1.0 for c in spec.components):
            raise UserError(
                "a live sum runs the skills' adapters unchanged, so every weight must be 1",
                hint="activate() builds the weighted sum exactly (by concatenating ranks)",
            )
        names = self._load_components(spec)
        self.residency.activate_adapter(names)
        self.stats.live += 1
        return names

    def build(self, spec: CompositionSpec) -> str:
        """Make sure the composed adapter is in the model (without activating it) and return its name."""
        key, name = self._build(spec)
        self._evict(keep=key)
        return name

    def _build(self, spec: CompositionSpec) -> tuple[str, str]:
        spec = self.resolve(spec)
        self._sync()
        key, name = spec.key, spec.adapter_name
        if key in self._cache:
            self._cache.move_to_end(key)
            self.stats.hits += 1
            return key, name
        names = self._load_components(spec)
        model = self.model
        _check_composable(model, names)
        weights = [c.weight for c in spec.sorted_components()]
        try:
            _METHODS[spec.method].build(model, names, weights, name, spec)
            if name not in model.peft_config:
                raise UserError(f"composition method {spec.method!r} did not add adapter {name!r}")
        except ValueError as error:  # peft's refusals (and pydantic's) are ValueErrors
            self._discard(name)
            raise UserError(f"cannot compose {_describe(spec)}: {error}") from error
        except BaseException:
            self._discard(name)
            raise
        model.eval()
        self._owner = model
        self._cache[key] = name
        self.stats.builds += 1
        return key, name

    def materialize(self, spec: CompositionSpec, out_dir: Path | str, *, overwrite: bool = False) -> Path:
        """Write the composition as one standard PEFT adapter folder and return it.

        The folder holds adapter_config.json and adapter_model.safetensors only, so vLLM / LoRAX serve it and
        `PeftModel.from_pretrained` loads it. A `sum` is written as its `cat` (the exact sum, at rank sum(r)).
        """
        out = Path(out_dir)
        if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
            raise UserError(f"{out} exists and is not empty", hint="pick another folder or pass overwrite=True")
        name = self.build(spec)
        staging = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            save_adapter(self.model, name, staging)
            if out.is_dir():
                shutil.rmtree(out)
            elif out.exists():
                out.unlink()
            staging.rename(out)  # the folder appears whole or not at all
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return out

    def evict(self, spec: CompositionSpec) -> None:
        """Delete one cached composition from the model (not the active one: activate something else first)."""
        self._sync()
        key = self.resolve(spec).key
        name = self._cache.get(key)
        if name is None:
            return
        if name in self.model.active_adapters:
            raise UserError(f"composition {name} is active", hint="activate a skill or another composition first")
        self._cache.pop(key)
        self.model.delete_adapter(name)

    def clear(self) -> None:
        """Delete every cached composition from the model: after a part was forgotten, none may keep its weights.
        They are rebuilt from the store on their next use."""
        self._sync()
        for name in list(self._cache.values()):
            self._discard(name)
        self._cache.clear()

    # ------------------------------------------------------------------------------------------------ internals

    def _sync(self) -> None:
        """Forget cached adapters that are no longer in the model (the residency may have replaced the model)."""
        model = self.model
        if model is not self._owner:
            self._cache.clear()
            self._owner = model
            return
        for key, name in list(self._cache.items()):
            if name not in model.peft_config:
                del self._cache[key]

    def _load_components(self, spec: CompositionSpec) -> list[str]:
        """Make every component hot at once (through the residency, so its bounds and LRU hold); their names."""
        components = spec.sorted_components()
        if len(components) > self.residency.max_hot:
            raise UserError(
                f"{len(components)} skills must be loaded together, but the residency keeps at most "
                f"{self.residency.max_hot} hot",
                hint="raise max_hot, or compose fewer skills",
            )
        refs = [(c.skill, c.revision) for c in components]
        names = [self.residency.load(*ref) for ref in refs]
        if not all(self.residency.in_model(*ref) for ref in refs):
            # With exactly max_hot components, the residency may keep its active skill and evict a component loaded
            # just before; activating the first component makes the whole set the most recent, so all stay.
            self.residency.activate(*refs[0])
            names = [self.residency.load(*ref) for ref in refs]
        return names

    def _evict(self, keep: str) -> None:
        model = self.model
        while len(self._cache) > self.max_cached:
            active = set(model.active_adapters)
            victims = [key for key, name in self._cache.items() if key != keep and name not in active]
            if not victims:
                return
            model.delete_adapter(self._cache.pop(victims[0]))
            self.stats.evictions += 1

    def _discard(self, name: str) -> None:
        model = self.model
        if name in model.peft_config:
            model.delete_adapter(name)


def _describe(spec: CompositionSpec) -> str:
    return f"{' + '.join(c.ref for c in spec.components)} with {spec.method!r}"


def _check_composable(model: Any, names: list[str]) -> None:
    """Refuse adapters that peft's add_weighted_adapter would combine wrongly or silently incompletely.

    The combined adapter copies the first adapter's config (except rank, alpha and targets), so options that change
    which layers are adapted or how the update is scaled must agree, or the result would drop or mis-scale parts.
    """
    configs = {name: model.peft_config[name] for name in names}
    problems = []
    for name, config in configs.items():
        if getattr(config, "use_dora", False):
            problems.append(f"{name} uses DoRA")
        if getattr(config, "use_rslora", False):
            problems.append(f"{name} uses rsLoRA scaling")
        if getattr(config, "bias", "none") != "none":
            problems.append(f"{name} trains biases")
        if getattr(config, "modules_to_save", None):
            problems.append(f"{name} saves whole modules")
    for option in ("layers_to_transform", "layers_pattern", "exclude_modules"):
        values = {json.dumps(_plain(getattr(config, option, None)), sort_keys=True) for config in configs.values()}
        if len(values) > 1:
            problems.append(f"the adapters differ in {option}")
    if len({isinstance(config.target_modules, str) for config in configs.values()}) > 1:
        problems.append("some adapters give target_modules as a pattern and others as a list")
    if problems:
        raise UserError(f"these adapters cannot be composed: {'; '.join(problems)}", hint="retrain them as plain LoRA")


def _plain(value: Any) -> Any:
    return sorted(value) if isinstance(value, set | frozenset | list | tuple) else value
