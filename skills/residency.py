"""Residency: which skills are hot (in an adapter slot or the shared PeftModel), warm (weights in RAM) or cold (only
on disk).

peft's calls that walk every module and every loaded adapter (`load_adapter`, `set_adapter`) slow down roughly
linearly as adapters pile up in one model (measured on SmolLM2: `set_adapter` 9 ms with 8 loaded, 526 ms with 257).
So the hot set is bounded (`max_hot`) and evicted least-recently-used first; an evicted adapter's tensors stay warm
in RAM (`max_warm`, LRU again) so bringing it back reads nothing from disk. Switching between hot skills only calls
`set_adapter`: nothing is reloaded.

With adapter slots (`slots=`, skills.runtime; `local_runtime` makes them by default), `slot()` places a skill in a
slot instead (a tensor copy from the warm copy; switching is then an index); a skill there is hot too, and `forget`
empties its slot.
"""

from __future__ import annotations

import uuid
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from skills.adapter_check import check_adapter
from skills.errors import CorruptSkillError, InvalidAdapterError, UserError
from skills.files import ADAPTER_WEIGHTS, check_adapter_dir, read_safetensors
from skills.reader import AdapterWeights, SkillReader

if TYPE_CHECKING:
    from skills.runtime import AdapterSlots

State = Literal["hot", "warm", "cold"]


class ResidencyStats(BaseModel):
    """Counters, for tests and benchmarks: what each request cost."""

    disk_loads: int = 0  # cold -> warm: files read and verified
    model_loads: int = 0  # warm -> hot: adapter added to the PeftModel
    hot_hits: int = 0  # already hot: nothing loaded
    switches: int = 0  # set_adapter calls
    slot_loads: int = 0  # copied into adapter slots (`slot`)
    merges: int = 0  # adapters folded into the base's weights for decoding (see Residency.merged)
    hot_evictions: int = 0
    warm_evictions: int = 0


def adapter_name(skill: str, revision: int) -> str:
    """The adapter's name inside the PeftModel. Never a substring of peft's "lora_" prefix (peft warns on those)."""
    return f"sk_{skill}_r{revision}"


class Residency:
    """Keeps a bounded set of skills loaded in one shared model, using peft's own adapter calls.

    `model` is the base model (it is wrapped into a `PeftModel` when the first skill is loaded; read `.model` for the
    current object) or a `PeftModel` already. Keys are (skill, revision): two revisions of one skill can be hot at once.
    """

    def __init__(
        self, model: Any, store: SkillReader, *, max_hot: int = 8, max_warm: int = 64, slots: AdapterSlots | None = None
    ) -> None:
        if max_hot < 1:
            raise UserError("max_hot must be at least 1")
        self._model = model
        # adapter slots (skills.runtime.AdapterSlots) on the same base, or None: skills placed there with `slot()`
        # run as per-row slot indices; peft's adapters stay for what the slots refuse, merging and training
        self.slots = slots
        self.store = store
        self.max_hot = max_hot
        self.max_warm = max_warm
        # hot entries keep the verified tensors they were loaded from, so eviction to warm copies nothing
        self._hot: OrderedDict[tuple[str, int], tuple[str, AdapterWeights]] = OrderedDict()
        self._warm: OrderedDict[tuple[str, int], AdapterWeights] = OrderedDict()
        self._active: str | None = None
        # (adapter name, [(weight, its original values)]) while an adapter is folded into the base's weights
        self._merged: tuple[str, list[tuple[Any, Any]]] | None = None
        self.stats = ResidencyStats()

    @property
    def model(self) -> Any:
        """The shared model: a `PeftModel` once any skill has been loaded (never with an adapter merged in)."""
        self.restore()
        return self._model

    @contextmanager
    def merged(self, name: str) -> Iterator[Any]:
        """Run adapter `name` folded into the base's weights, W + dW, with peft's LoRA path switched off.

        Decoding one sequence at a time is dominated by per-layer overhead: every adapted linear layer runs two extra
        small matmuls per token (measured on SmolLM2 with 2 threads: 1 skill at 0.86x and 3 composed at 0.64x the base's
        tokens/s). Merged, the model computes exactly as fast as the base. The merge stays after the block (consecutive
        turns with the same skills pay it once) and is undone before anything else uses the model: every other method
        of this class, and `model`, restore the original weights first, bit for bit, from a copy taken at merge time
        (peft's own unmerge subtracts the update again, which leaves rounding residue in a base that others share).
        """
        import torch
        from peft.tuners.lora import LoraLayer

        if self._merged is None or self._merged[0] != name:
            self.restore()
            if not self._is_peft() or name not in self._model.peft_config:
                raise UserError(f"cannot merge {name!r}: it is not loaded", hint="load it first")
            saved: list[tuple[Any, Any]] = []
            try:
                with torch.no_grad():
                    layers: list[Any] = [m for m in self._model.modules() if isinstance(m, LoraLayer)]
                    for layer in layers:
                        if name in layer.lora_A:
                            weight = layer.get_base_layer().weight
                            saved.append((weight, weight.detach().clone()))
                            weight.add_(layer.get_delta_weight(name).to(weight.dtype))
            except BaseException:
                self._merged = (name, saved)
                self.restore()
                raise
            self._merged = (name, saved)
            self.stats.merges += 1
        with self._model.disable_adapter():
            yield self._model

    @property
    def merged_adapter(self) -> str | None:
        """The adapter folded into the base's weights right now, if any."""
        return self._merged[0] if self._merged else None

    def restore(self) -> None:
        """Undo a merge (if any): the base's weights as they were, exactly."""
        if self._merged is None:
            return
        import torch

        _, saved = self._merged
        with torch.no_grad():
            for weight, original in saved:
                weight.copy_(original)
        self._merged = None

    def _key(self, skill: str, revision: int | None) -> tuple[str, int]:
        return (skill, self.store.get(skill).current if revision is None else revision)

    def state(self, skill: str, revision: int | None = None) -> State:
        """hot: ready to run without a copy (a peft adapter in the model, or in an adapter slot); warm: its tensors in
        RAM; cold: only on disk."""
        key = self._key(skill, revision)
        slotted = self.slots is not None and self.slots.slot_of(key) is not None
        return "hot" if key in self._hot or slotted else "warm" if key in self._warm else "cold"

    def hot(self) -> list[tuple[str, int]]:
        """Hot skills: those in adapter slots (least recently used first), then peft's (least recently used first)."""
        slotted = self._slotted()
        return slotted + [key for key in self._hot if key not in slotted]

    def in_model(self, skill: str, revision: int | None = None) -> bool:
        """Whether the skill is loaded as a peft adapter (what merging, `activate` and peft's compositions use)."""
        return self._key(skill, revision) in self._hot

    def _slotted(self) -> list[tuple[str, int]]:
        return [] if self.slots is None else [key for key in self.slots.resident() if isinstance(key, tuple)]

    def warm(self) -> list[tuple[str, int]]:
        return list(self._warm)

    def load(self, skill: str, revision: int | None = None) -> str:
        """Make a skill hot (loading it from RAM or disk as needed) and return its adapter name in the model."""
        key = self._key(skill, revision)
        if key in self._hot:  # nothing in the model changes: a merge may stay
            self._hot.move_to_end(key)
            self.stats.hot_hits += 1
            return self._hot[key][0]
        self.restore()
        weights = self._warm.pop(key, None)
        if weights is None:
            weights = self.store.read_adapter(*key)  # raises CorruptSkillError / BaseMismatchError, nothing changed
            self.stats.disk_loads += 1
        name = adapter_name(*key)
        self._insert(name, weights.config, weights.tensors, f"skill {key[0]!r} revision {key[1]}")
        self._hot[key] = (name, weights)
        self.stats.model_loads += 1
        self._evict_hot(keep=key)
        return name

    def slot(self, skill: str, revision: int | None = None) -> tuple[str, int]:
        """Make a skill resident in the adapter slots (not in the PeftModel) and return its key there.

        The weights come from the hot or warm copy when there is one (nothing read from disk), else from the store,
        and stay warm. Raises `AdapterMisfitError` for an adapter the slots cannot hold (serve it with `load`).
        """
        if self.slots is None:
            raise UserError("this residency has no adapter slots", hint="pass slots=AdapterSlots(base_model)")
        key = self._key(skill, revision)
        if self.slots.slot_of(key) is not None:
            return key
        weights = self._hot[key][1] if key in self._hot else self._warm.get(key)
        if weights is None:
            weights = self.store.read_adapter(*key)
            self.stats.disk_loads += 1
            if self.max_warm > 0:
                self._warm[key] = weights
                while len(self._warm) > self.max_warm:
                    self._warm.popitem(last=False)
                    self.stats.warm_evictions += 1
        elif key in self._warm:
            self._warm.move_to_end(key)
        self.slots.load(key, weights)
        self.stats.slot_loads += 1
        return key

    def activate(self, skill: str, revision: int | None = None) -> str:
        """Load a skill if needed and make it the active adapter; returns its adapter name."""
        name = self.load(skill, revision)
        self.restore()
        if self._active != name or self._model.active_adapter != name:
            self._model.set_adapter(name, inference_mode=True)
            self._active = name
            self.stats.switches += 1
        return name

    def activate_adapter(self, names: str | Sequence[str]) -> None:
        """Activate what `activate(skill)` cannot (a composition, or several adapters at once), keeping books true.

        `names` is one adapter already in the model, or several to run together (peft's multi-adapter activation:
        their updates add up). Afterwards `activate(skill)` always switches back, eviction spares no skill for being
        active, and `trial` restores this adapter when it is a single one.
        """
        self.restore()
        wanted = [names] if isinstance(names, str) else list(names)
        loaded = self._model.peft_config if self._is_peft() else {}
        missing = [name for name in wanted if name not in loaded]
        if not wanted or missing:
            raise UserError(f"cannot activate {missing or 'no adapters'}: not in the model", hint="load them first")
        if len(wanted) == 1:
            self._model.set_adapter(wanted[0], inference_mode=True)
            self._active = wanted[0]
        else:
            self._model.base_model.set_adapter(wanted, inference_mode=True)
            # PeftModel itself holds one name (its forward looks that name's config up); peft's own delete_adapter
            # keeps it at one of the active adapters in the same way.
            self._model.active_adapter = wanted[0]
            self._active = None  # no single adapter to restore after a trial, nor to spare from eviction
        self.stats.switches += 1

    def evict(self, skill: str, revision: int | None = None) -> None:
        """Move a hot skill to warm (or drop a warm one to cold)."""
        self.restore()
        key = self._key(skill, revision)
        if key in self._hot:
            self._unload(key)
        else:
            self._warm.pop(key, None)

    def forget(self, skill: str, revision: int) -> None:
        """Drop one revision from the model and from RAM (hot and warm alike), as when it was deleted on purpose:
        `evict` keeps an adapter warm, this keeps nothing. A revision that is not resident is ignored."""
        self.restore()
        key = (skill, revision)
        self._warm.pop(key, None)
        if self.slots is not None:
            self.slots.unload(key)
        if key not in self._hot:
            return
        name, _ = self._hot.pop(key)
        if self._active == name:
            self._active = None
        if list(self._model.peft_config) == [name]:
            self._model = self._model.unload()  # nothing else was loaded: give back the plain base
            return
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*was active which is now deleted.*", category=UserWarning)
            self._delete(name)

    @contextmanager
    def trial(self, adapter_dir: Path | str) -> Iterator[Any]:
        """Activate an uncommitted adapter folder (e.g. a training candidate) inside the block, then remove it.

        Used to measure a candidate before it is committed, so its revision record can carry its evaluation.
        """
        self.restore()
        folder = Path(adapter_dir)
        label = f"candidate adapter {folder}"
        config = check_adapter_dir(folder, label=label)
        tensors = read_safetensors(folder / ADAPTER_WEIGHTS, label=label)
        check_adapter(config, tensors, label=label, base=self._model)  # a bad candidate is the caller's input
        name = f"sk_trial_{uuid.uuid4().hex[:8]}"
        previous = self._active
        was_wrapped = self._is_peft()
        self._insert(name, config, tensors, label)
        try:
            self._model.set_adapter(name, inference_mode=True)
            yield self._model
        finally:
            if not was_wrapped:
                self._model = self._model.unload()  # nothing else was loaded: give back the plain base
            else:
                if previous is not None:
                    self._model.set_adapter(previous, inference_mode=True)
                with warnings.catch_warnings():
                    # with no single adapter to go back to, peft activates any other one and says so; what runs
                    # next activates its own adapters or disables them all (base_only), so that choice never counts
                    warnings.filterwarnings("ignore", message="Adapter sk_trial_.* was active which is now deleted")
                    self._delete(name)

    @contextmanager
    def base_only(self) -> Iterator[Any]:
        """Run the base with every adapter disabled inside the block."""
        from peft import PeftModel

        self.restore()
        if isinstance(self._model, PeftModel):
            with self._model.disable_adapter():
                yield self._model
        else:
            yield self._model

    # ------------------------------------------------------------------------------------------------ internals

    def _insert(self, name: str, config_dict: dict[str, Any], tensors: dict[str, Any], label: str) -> None:
        """Add one adapter to the shared model, after checking that its tensors are exactly its LoRA tensors.

        peft's `set_peft_model_state_dict` loads with `load_state_dict(strict=False)` on the whole model: without the
        check, a tensor named like a base weight would overwrite the base for every skill. This is the last line of
        defence (the store checked names and ranks already); here every shape is checked against its module too.
        """
        from peft import PeftModel, get_peft_model, set_peft_model_state_dict

        try:
            config = check_adapter(config_dict, tensors, label=label, base=self._model)
        except InvalidAdapterError as error:
            raise CorruptSkillError(error.message, hint=error.hint) from error
        created = False
        try:
            if isinstance(self._model, PeftModel):
                self._model.add_adapter(name, config, low_cpu_mem_usage=True)
            else:
                with warnings.catch_warnings():
                    # peft asks transformers a deprecated question inside get_peft_model; harmless, not actionable
                    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                    self._model = get_peft_model(self._model, config, adapter_name=name, low_cpu_mem_usage=True)
                created = True
            result: Any = set_peft_model_state_dict(self._model, tensors, adapter_name=name, low_cpu_mem_usage=True)
            missing = [k for k in result.missing_keys if f".{name}." in k and "lora_" in k]
            if result.unexpected_keys or missing:
                raise CorruptSkillError(
                    f"{label} does not fit the base: "
                    f"{len(result.unexpected_keys)} unexpected and {len(missing)} missing tensors",
                    hint="it was saved from another architecture; delete it or retrain it on this base",
                )
        except BaseException as error:
            if created:
                self._model = self._model.unload()
            elif name in getattr(self._model, "peft_config", {}):
                self._delete(name)
            if isinstance(error, ValueError | RuntimeError | TypeError | KeyError):  # peft's and torch's refusals
                text = str(error).replace("\n", " ")
                raise CorruptSkillError(
                    f"{label} does not fit the base: {text[:300]}",
                    hint="it was saved from another architecture; delete it or retrain it on this base",
                ) from error
            raise
        self._model.eval()

    def _delete(self, name: str) -> None:
        """peft's `delete_adapter`, leaving the `PeftModel` naming an adapter it still holds.

        peft moves `PeftModel.active_adapter` only when exactly one adapter stays active in its first layer; otherwise
        it keeps naming the deleted one, and `disable_adapter()` (base_only, merged decoding) then fails with a
        KeyError. Activating a remaining adapter keeps it consistent (what runs next activates its own anyway).
        """
        self._model.delete_adapter(name)
        remaining = list(self._model.peft_config)
        if remaining and self._model.active_adapter not in remaining:
            self._model.set_adapter(remaining[0], inference_mode=True)

    def _unload(self, key: tuple[str, int]) -> None:
        name, weights = self._hot.pop(key)
        with warnings.catch_warnings():
            # with max_hot=1 the active adapter is the only one to evict; the next activate sets the right one
            warnings.filterwarnings("ignore", message=".*was active which is now deleted.*", category=UserWarning)
            self._delete(name)
        if self._active == name:
            self._active = None
        self.stats.hot_evictions += 1
        if self.max_warm > 0:
            self._warm[key] = weights
            while len(self._warm) > self.max_warm:
                self._warm.popitem(last=False)
                self.stats.warm_evictions += 1

    def _evict_hot(self, keep: tuple[str, int]) -> None:
        # Least recently used first, never the adapter just loaded (`keep`), and the active adapter only when
        # nothing else can go (max_hot=1): evicting it makes peft switch the model to some other adapter, so a
        # prefetching `load()` would otherwise change what the model computes.
        while len(self._hot) > self.max_hot:
            candidates = [key for key in self._hot if key != keep]
            victim = next((key for key in candidates if self._hot[key][0] != self._active), candidates[0])
            self._unload(victim)

    def _is_peft(self) -> bool:
        from peft import PeftModel

        return isinstance(self._model, PeftModel)
