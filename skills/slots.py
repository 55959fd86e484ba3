"""The tensor math of adapter slots: one adapted Linear's stacked LoRA weights, and the gathered batched update.

A `SlotStack` holds, for one `nn.Linear` of the base, the LoRA weights of every slot at once:
A: (S, R, in) and B: (S, out, R), the adapter's scaling folded into B and ranks below R padded with zeros. Slot 0
is the zero slot (never written): a row with no adapter, or an adapter that does not adapt this module, gathers it.

`lora_delta` is what a forward hook adds to the Linear's output for a batch whose rows use different slots: one
gathered shrink and one gathered expand (BGMV, as Punica / S-LoRA / vLLM's `torch_ops` do), never a loop over the
distinct adapters. Several slots per row (a composition) are the same two matmuls at rank k*R: concatenating LoRA
ranks is an exact sum, B_1 A_1 + B_2 A_2 = [B_1, B_2] [A_1; A_2].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

ZERO_SLOT = 0
"""The slot that holds zeros everywhere: what a row without an adapter (or an unadapted module) gathers."""


@dataclass
class SlotStack:
    """The stacked LoRA weights of one Linear layer for every slot (allocated lazily, grown by doubling)."""

    in_features: int
    out_features: int
    dtype: torch.dtype
    device: torch.device
    a: torch.Tensor = field(init=False)  # (S, R, in)
    b: torch.Tensor = field(init=False)  # (S, out, R), scaling folded in
    occupied: set[int] = field(default_factory=set)  # slots with a nonzero update on this module
    mask: torch.Tensor = field(init=False)  # (S,) bool: `occupied` as a tensor, for gathering without a Python loop

    def __post_init__(self) -> None:
        self.a = torch.zeros(0, 0, self.in_features, dtype=self.dtype, device=self.device)
        self.b = torch.zeros(0, self.out_features, 0, dtype=self.dtype, device=self.device)
        self.mask = torch.zeros(0, dtype=torch.bool, device=self.device)

    @property
    def slots(self) -> int:
        return int(self.a.shape[0])

    @property
    def rank(self) -> int:
        return int(self.a.shape[1])

    def nbytes(self) -> int:
        return self.a.numel() * self.a.element_size() + self.b.numel() * self.b.element_size()

    def resize(self, slots: int, rank: int) -> None:
        """Grow to at least `slots` slots and rank `rank`, keeping what is stored (new entries are zeros)."""
        slots, rank = max(slots, self.slots), max(rank, self.rank)
        if (slots, rank) == (self.slots, self.rank):
            return
        a = torch.zeros(slots, rank, self.in_features, dtype=self.dtype, device=self.device)
        b = torch.zeros(slots, self.out_features, rank, dtype=self.dtype, device=self.device)
        mask = torch.zeros(slots, dtype=torch.bool, device=self.device)
        a[: self.slots, : self.rank] = self.a
        b[: self.slots, :, : self.rank] = self.b
        mask[: self.slots] = self.mask
        self.a, self.b, self.mask = a, b, mask

    @torch.no_grad()
    def write(self, slot: int, lora_a: torch.Tensor, lora_b: torch.Tensor, scaling: float) -> None:
        """Copy one adapter's A (r, in) and B (out, r) into `slot`, B scaled; the rest of the slot's rank is zeroed.
        The caller has checked the shapes and grown the stack (`resize`) to hold rank r."""
        r = int(lora_a.shape[0])
        self.a[slot].zero_()
        self.b[slot].zero_()
        self.a[slot, :r].copy_(lora_a)
        self.b[slot, :, :r].copy_(lora_b.to(self.dtype) * scaling)  # scaled in the stack's dtype's precision
        self.occupied.add(slot)
        self.mask[slot] = True

    @torch.no_grad()
    def clear(self, slot: int) -> None:
        """Zero `slot` here, so the next adapter in it starts from the zero update on modules it does not adapt."""
        if slot in self.occupied:
            self.a[slot].zero_()
            self.b[slot].zero_()
            self.occupied.discard(slot)
            self.mask[slot] = False


@dataclass
class GatheredRows:
    """What one batch needs of one stack, gathered once per batch (and reused by every decode step)."""

    uniform: bool  # every row uses the same slots: plain matmuls on (in) -> (k*R) -> (out)
    a: torch.Tensor  # uniform: (kR, in); mixed: (b, in, kR), transposed for bmm
    b: torch.Tensor  # uniform: (out, kR); mixed: (b, kR, out)


def gather_rows(stack: SlotStack, slots: torch.Tensor, uniform: list[int] | None) -> GatheredRows | None:
    """The rows' weights of `stack`: `slots` is (b, k) slot indices (ZERO_SLOT for none); `uniform`, when every row
    is the same, that one row's slots (then no gather at all: views, or one concatenation). None: nothing to add.

    Slots that do not adapt this module are mapped to the zero slot first, so a module no row adapts costs nothing.
    Costs O(rows), never O(resident adapters): a switch stays flat however many slots are filled.
    """
    if uniform is not None:
        used = [s for s in uniform if s in stack.occupied]
        if not used:
            return None
        a = torch.cat([stack.a[s] for s in used], dim=0) if len(used) > 1 else stack.a[used[0]]  # (kR, in)
        b = torch.cat([stack.b[s] for s in used], dim=1) if len(used) > 1 else stack.b[used[0]]  # (out, kR)
        return GatheredRows(uniform=True, a=a, b=b)
    rows = torch.where(stack.mask[slots], slots, torch.zeros_like(slots))  # (b, k): unadapted here -> zero slot
    if not bool((rows != ZERO_SLOT).any()):
        return None
    batch, k = rows.shape
    a = stack.a[rows]  # (b, k, R, in)
    b = stack.b[rows]  # (b, k, out, R)
    rank = stack.rank
    a_t = a.reshape(batch, k * rank, stack.in_features).transpose(1, 2).contiguous()  # (b, in, kR)
    b_t = b.permute(0, 1, 3, 2).reshape(batch, k * rank, stack.out_features).contiguous()  # (b, kR, out)
    return GatheredRows(uniform=False, a=a_t, b=b_t)


def lora_delta(x: torch.Tensor, output: torch.Tensor, rows: GatheredRows) -> torch.Tensor:
    """`output` + the rows' LoRA updates of `x`: x (b, t, in) -> output (b, t, out). One shrink, one expand.

    The expand accumulates into `output` in place when autograd does not need it (inference): at batch 1 a decode
    step is dominated by per-op overhead, and fusing the add into the expand saves one op per adapted layer.
    """
    in_place = not (torch.is_grad_enabled() and (output.requires_grad or x.requires_grad))
    if rows.uniform:
        shrink = torch.nn.functional.linear(x, rows.a)  # (..., kR)
        if in_place and output.is_contiguous():
            flat = output.view(-1, output.shape[-1])  # (b*t, out)
            flat.addmm_(shrink.reshape(-1, shrink.shape[-1]), rows.b.t())  # += shrink @ B^T
            return output
        return output + torch.nn.functional.linear(shrink, rows.b)  # (..., out)
    if x.dim() != 3 or x.shape[0] != rows.a.shape[0]:
        raise ValueError(
            f"adapter slots were set for {rows.a.shape[0]} rows, but a layer got input of shape {tuple(x.shape)}"
        )
    shrink = torch.bmm(x.to(rows.a.dtype), rows.a)  # (b, t, kR)
    if in_place:
        return output.baddbmm_(shrink, rows.b)  # (b, t, out)
    return torch.baddbmm(output, shrink, rows.b)
