"""The multi-LoRA runtime: adapter slots on a plain base model, and gathered batched LoRA in one forward pass.

peft keeps each adapter as its own modules inside every adapted layer: `set_adapter` and `load_adapter` walk every
module and every loaded adapter (measured on SmolLM2: 53 ms per switch with 64 hot), and a mixed batch loops over the
distinct adapters in every layer. `AdapterSlots` does what Punica / S-LoRA / vLLM do instead:

- every adapted `nn.Linear` of the base gets preallocated stacked LoRA weights for S slots (`skills.slots`), attached
  with a forward hook on the existing module: nothing is replaced, so peft can still wrap the same base to train, and
  with no slots selected the hook returns at once;
- loading an adapter = check that it fits, then copy its tensors into a free slot (no walk over modules or adapters);
  switching = a slot index; an LRU with pinning decides which slot to reuse;
- `using(rows)` sets one slot list per batch row (empty: the base; several: a composition, summed) for the forward
  passes or the whole `generate` inside the block; each adapted layer then adds one gathered shrink + one expand.

Memory: stacks exist only for the modules some loaded adapter targets, with as many slots as are in use (doubling up
to `capacity`) and the largest rank loaded so far (up to `r_max`): 1,000 q,v r=8 slots on SmolLM2 take ~1.8 GB,
all-linear ~10 GB.

What the slots refuse (`AdapterMisfitError`, one line: serve that adapter with peft instead): DoRA, fan_in_fan_out,
embedding targets, modules that are not Linear layers of this base, ranks above `r_max`. Adapters that are not plain
LoRA at all are refused as everywhere (`InvalidAdapterError`, from `check_adapter`). Not thread-safe: one `using`
block at a time per base.
"""

from __future__ import annotations

import json
import math
import weakref
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from skills.adapter_check import PREFIX, check_adapter, rank_of, targets_module
from skills.errors import AdapterMisfitError, SlotsFullError, UserError
from skills.reader import AdapterWeights
from skills.slots import ZERO_SLOT, GatheredRows, SlotStack, gather_rows, lora_delta

_INITIAL_SLOTS = 8  # slots allocated before the first doubling (plus the zero slot)


@dataclass(frozen=True)
class PreparedAdapter:
    """An adapter checked and turned into what the stacks store: module -> (A (r, in), B (out, r), scaling)."""

    modules: dict[str, tuple[torch.Tensor, torch.Tensor, float]]
    rank: int


@dataclass
class _Batch:
    """The rows selected by `using`: slot indices (b, k), and the weights each stack gathered for them."""

    slots: torch.Tensor  # (b, k) long, ZERO_SLOT where a row has fewer than k adapters
    uniform: list[int] | None  # every row the same: that row's slots
    gathered: dict[str, GatheredRows | None]


class AdapterSlots:
    """Adapter slots on one base model (a transformers model, not a `PeftModel`): load, pin, select per row.

    `capacity`: adapters resident at once (LRU beyond it, pinned ones never evicted). `r_max`: the largest rank a
    slot holds. Keys are any hashable identity, e.g. (skill, revision).
    """

    def __init__(self, model: Any, *, capacity: int = 64, r_max: int = 64) -> None:
        if capacity < 1 or r_max < 1:
            raise UserError("capacity and r_max must be at least 1")
        from peft import PeftModel

        if isinstance(model, PeftModel):
            raise UserError("AdapterSlots needs the plain base model", hint="pass peft_model.get_base_model()")
        self.model = model
        self.capacity = capacity
        self.r_max = r_max
        parameter = next(model.parameters())
        self._dtype, self._device = parameter.dtype, parameter.device
        # every Linear of the base, by peft's module path: what an adapter may target
        self._linears: dict[str, torch.nn.Linear] = dict(_base_linears(model))
        self._stacks: dict[str, SlotStack] = {}
        self._hooks: dict[str, Any] = {}
        weakref.finalize(self, _remove_hooks, self._hooks)  # collected: the base is as it was given
        self._slots: OrderedDict[Hashable, int] = OrderedDict()  # key -> slot, least recently used first
        self._modules_of: dict[int, list[str]] = {}  # slot -> the modules its adapter wrote
        self._pins: dict[Hashable, int] = {}  # key -> pin count
        self._free: list[int] = []  # slots given back, reused before new ones
        self._next = 1  # the next never-used slot (0 is the zero slot)
        self._allocated = 1 + min(capacity, _INITIAL_SLOTS)
        self._targets: dict[str, list[str]] = {}  # target options (JSON) -> modules they select
        self._batch: _Batch | None = None

    # ------------------------------------------------------------------------------------------------ residency

    def load(self, key: Hashable, weights: AdapterWeights) -> int:
        """Make `key`'s adapter resident and return its slot (already resident: just marked recently used).

        Checked before anything is written: an adapter that does not fit raises and leaves every slot as it was.
        When all slots are taken, the least recently used unpinned one is reused.
        """
        if key in self._slots:
            self._slots.move_to_end(key)
            return self._slots[key]
        label = f"skill {weights.skill!r} revision {weights.record.number}"
        prepared = self.prepare(weights.config, weights.tensors, label=label)
        return self._install(key, prepared)

    def load_tensors(self, key: Hashable, config: Mapping[str, Any], tensors: Mapping[str, Any], *, label: str) -> int:
        """`load` for an adapter that is not a store revision (a candidate folder, a composition built in RAM)."""
        if key in self._slots:
            self._slots.move_to_end(key)
            return self._slots[key]
        return self._install(key, self.prepare(config, tensors, label=label))

    def unload(self, key: Hashable) -> None:
        """Give `key`'s slot back (zeroed). Refused while it is pinned or selected by a running `using` block."""
        if key not in self._slots:
            return
        if key in self._pins:
            raise UserError(f"adapter {key!r} is pinned", hint="unpin it first")
        self._release(key)

    def slot_of(self, key: Hashable) -> int | None:
        """The slot holding `key`, or None when it is not resident. Does not count as a use."""
        return self._slots.get(key)

    def resident(self) -> list[Hashable]:
        """Resident keys, least recently used first."""
        return list(self._slots)

    def pin(self, key: Hashable) -> None:
        """Keep `key` resident until as many `unpin` calls: eviction never picks it."""
        if key not in self._slots:
            raise UserError(f"adapter {key!r} is not resident", hint="load it first")
        self._pins[key] = self._pins.get(key, 0) + 1

    def unpin(self, key: Hashable) -> None:
        count = self._pins.get(key, 0)
        if count <= 1:
            self._pins.pop(key, None)
        else:
            self._pins[key] = count - 1

    def pinned(self) -> list[Hashable]:
        return list(self._pins)

    def nbytes(self) -> int:
        """Bytes held by the stacks (what the slots cost in memory)."""
        return sum(stack.nbytes() for stack in self._stacks.values())

    # ------------------------------------------------------------------------------------------------ selecting

    @contextmanager
    def using(self, rows: Sequence[Sequence[Hashable]], gathered: dict[str, Any] | None = None) -> Iterator[None]:
        """Inside the block, row i of every batch runs with the adapters `rows[i]` (summed; empty: the base alone).

        Every key must be resident; they are pinned for the block, so loading others inside it never evicts them.
        The weights are gathered once per layer on first use and reused for every forward in the block (a whole
        `generate`). Batches inside must have exactly len(rows) rows. `gathered`: a dict kept by the caller across
        blocks with the same `rows` whose keys stay pinned meanwhile (a continuous decode's steps), so that the
        gathering is not done again for every block.
        """
        if self._batch is not None:
            raise UserError("adapter slots are already selected", hint="one `using` block at a time")
        missing = [key for row in rows for key in row if key not in self._slots]
        if missing:
            raise UserError(f"adapters {missing!r} are not resident", hint="load them first")
        width = max((len(row) for row in rows), default=0)
        keys = [key for row in rows for key in row]
        if width == 0 or not rows:  # the base alone: the hooks have nothing to do
            yield
            return
        for key in keys:
            self.pin(key)
        try:
            table = [[self._slots[key] for key in row] + [ZERO_SLOT] * (width - len(row)) for row in rows]
            slots = torch.tensor(table, dtype=torch.long, device=self._device)  # (b, k)
            for key in keys:
                self._slots.move_to_end(key)
            uniform = table[0] if all(row == table[0] for row in table) else None
            self._batch = _Batch(slots=slots, uniform=uniform, gathered={} if gathered is None else gathered)
            yield
        finally:
            self._batch = None
            for key in keys:
                self.unpin(key)

    def gather(self) -> None:
        """Gather every stack's weights for the selected rows now, inside a `using` block (the hooks otherwise do it
        on a layer's first forward): what a switch costs in full, measured or paid before the first token."""
        batch = self._batch
        if batch is None:
            raise UserError("no adapter slots are selected", hint="call gather() inside a `using` block")
        for module, stack in self._stacks.items():
            if module not in batch.gathered:
                batch.gathered[module] = gather_rows(stack, batch.slots, batch.uniform)

    def close(self) -> None:
        """Remove every hook and stack: the base is exactly as it was given."""
        _remove_hooks(self._hooks)
        self._stacks.clear()
        self._slots.clear()
        self._modules_of.clear()
        self._pins.clear()
        self._free, self._next = [], 1

    # ------------------------------------------------------------------------------------------------ checking

    def prepare(self, config: Mapping[str, Any], tensors: Mapping[str, Any], *, label: str) -> PreparedAdapter:
        """Check that an adapter fits the slots and return what they store; raises before anything is written.

        `InvalidAdapterError`: not plain LoRA, or its tensors do not match its config (names, pairs, ranks).
        `AdapterMisfitError`: plain LoRA that the slots cannot hold, or shapes that do not fit this base.
        """
        lora = check_adapter(config, tensors, label=label)  # names, pairs, ranks, plain LoRA (no base walk)
        if lora.use_dora:
            raise AdapterMisfitError(f"{label}: DoRA is not supported by adapter slots", hint=_FALLBACK)
        if lora.fan_in_fan_out:
            raise AdapterMisfitError(f"{label}: fan_in_fan_out is not supported by adapter slots", hint=_FALLBACK)
        found: dict[str, dict[str, torch.Tensor]] = {}
        for name, tensor in tensors.items():
            body = name[len(PREFIX) :]
            if body.endswith(".lora_A.weight"):
                found.setdefault(body.removesuffix(".lora_A.weight"), {})["A"] = tensor
            elif body.endswith(".lora_B.weight"):
                found.setdefault(body.removesuffix(".lora_B.weight"), {})["B"] = tensor
            else:  # check_adapter allows embedding tensors and (with use_dora) magnitudes: not ours
                raise AdapterMisfitError(f"{label}: tensor {name!r} is not a Linear LoRA weight", hint=_FALLBACK)
        targeted = self._targeted(lora)
        strays = sorted(set(found) - set(self._linears))
        if strays:
            raise AdapterMisfitError(f"{label}: the base has no Linear layer {strays[0]!r}", hint=_FALLBACK)
        lacking = sorted(set(targeted) - set(found))
        if lacking:
            raise AdapterMisfitError(
                f"{label}: {lacking[0]!r} is targeted but has no lora_A/lora_B tensors", hint=_FALLBACK
            )
        modules: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = {}
        top = 0
        for module, pair in sorted(found.items()):
            linear, rank = self._linears[module], rank_of(lora, module)
            a, b = pair["A"], pair["B"]
            want_a, want_b = (rank, linear.in_features), (linear.out_features, rank)
            if tuple(a.shape) != want_a or tuple(b.shape) != want_b:
                raise AdapterMisfitError(
                    f"{label}: {module!r} has lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)}, "
                    f"but this base needs {want_a} and {want_b}",
                    hint=_FALLBACK,
                )
            if rank > self.r_max:
                raise AdapterMisfitError(
                    f"{label}: rank {rank} on {module!r} is above r_max={self.r_max}", hint=_FALLBACK
                )
            alpha = _alpha_of(lora, module)
            scaling = alpha / math.sqrt(rank) if lora.use_rslora else alpha / rank
            modules[module] = (a, b, scaling)
            top = max(top, rank)
        return PreparedAdapter(modules=modules, rank=top)

    # ------------------------------------------------------------------------------------------------ internals

    def _targeted(self, lora: Any) -> list[str]:
        """The Linear layers this config selects, by peft's own matcher, cached per set of target options."""
        options = {
            name: _plain(getattr(lora, name, None))
            for name in ("target_modules", "exclude_modules", "layers_to_transform", "layers_pattern")
        }
        cache_key = json.dumps(options, sort_keys=True, default=str)
        if cache_key not in self._targets:
            output = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
            head = next((name for name, layer in self._linears.items() if layer is output), None)
            self._targets[cache_key] = [name for name in self._linears if targets_module(lora, name, output_layer=head)]
        return self._targets[cache_key]

    def _install(self, key: Hashable, prepared: PreparedAdapter) -> int:
        slot = self._take_slot()
        try:
            for module, (a, _, _) in prepared.modules.items():
                stack, rank = self._stack(module), int(a.shape[0])
                if rank > stack.rank:  # grow by doubling, so mixed ranks do not reallocate on every load
                    stack.resize(self._allocated, min(self.r_max, max(2 * stack.rank, rank)))
        except BaseException:  # out of memory while growing: the slot was never used
            self._free.append(slot)
            raise
        for module, (a, b, scaling) in prepared.modules.items():
            self._stacks[module].write(slot, a, b, scaling)
        self._slots[key] = slot
        self._modules_of[slot] = list(prepared.modules)
        return slot

    def _take_slot(self) -> int:
        if self._free:
            return self._free.pop()
        if len(self._slots) < self.capacity:
            slot = self._next
            self._next += 1
            if slot >= self._allocated:  # grow every stack by doubling
                self._allocated = min(self.capacity + 1, 2 * self._allocated)
                for stack in self._stacks.values():
                    stack.resize(self._allocated, stack.rank)
            return slot
        victim = next((key for key in self._slots if key not in self._pins), None)
        if victim is None:
            raise SlotsFullError(f"all {self.capacity} adapter slots are pinned", hint="unpin some, or raise capacity")
        self._release(victim)
        return self._free.pop()

    def _release(self, key: Hashable) -> None:
        slot = self._slots.pop(key)
        for module in self._modules_of.pop(slot, []):
            self._stacks[module].clear(slot)
        self._free.append(slot)

    def _stack(self, module: str) -> SlotStack:
        """The stack of `module`, created (and its hook attached) the first time an adapter targets it."""
        stack = self._stacks.get(module)
        if stack is None:
            linear = self._linears[module]
            stack = SlotStack(linear.in_features, linear.out_features, self._dtype, self._device)
            stack.resize(self._allocated, 1)
            self._stacks[module] = stack
            self._hooks[module] = linear.register_forward_hook(_hook(weakref.ref(self), module))
        return stack


def _hook(owner: weakref.ReferenceType[AdapterSlots], module: str) -> Any:
    """The forward hook of `module`'s stack. It holds its slots weakly: the base's layers outlive a runtime built on
    them (a shared base, one agent after another), and an `AdapterSlots` nobody uses any more is collected, its
    hooks removed by its finalizer, rather than kept alive (stacks and all) by the layers it hooked."""

    def hook(layer: Any, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
        slots = owner()
        if slots is None or slots._batch is None:  # no slot selected: the base path, untouched
            return None
        batch = slots._batch
        if module not in batch.gathered:
            batch.gathered[module] = gather_rows(slots._stacks[module], batch.slots, batch.uniform)
        rows = batch.gathered[module]
        if rows is None:  # no row's adapter adapts this layer
            return None
        return lora_delta(args[0], output, rows)

    return hook


def _remove_hooks(hooks: dict[str, Any]) -> None:
    for handle in hooks.values():
        handle.remove()
    hooks.clear()


_FALLBACK = "serve this adapter with peft (Residency) instead"


def _base_linears(model: Any) -> Iterator[tuple[str, torch.nn.Linear]]:
    """(peft's module path, layer) of the base's own Linear layers. A layer peft has wrapped already (the residency
    loaded a skill before the slots were made) is found as its `base_layer`, under the path adapters name it by;
    peft's own modules (lora_A, lora_B, ...) are not the base's."""
    for name, module in model.named_modules():
        parts = name.split(".")
        if not isinstance(module, torch.nn.Linear) or any(p.startswith("lora_") for p in parts):
            continue
        yield (name.removesuffix(".base_layer") if parts[-1] == "base_layer" else name), module


def _alpha_of(lora: Any, module: str) -> float:
    """The adapter's alpha on `module` (its `alpha_pattern` entry, else lora_alpha), found as peft finds it."""
    from peft.utils.other import get_pattern_key

    pattern: dict[str, float] = dict(lora.alpha_pattern or {})
    return float(pattern.get(get_pattern_key(list(pattern), module), lora.lora_alpha))


def _plain(value: Any) -> Any:
    return sorted(value) if isinstance(value, set | frozenset | list | tuple) else value
