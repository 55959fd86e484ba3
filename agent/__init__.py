"""The agent: settings, the shared base model, test fakes, benchmarks and the `habitloop` CLI."""

from agent.base import Base, BaseInfo, default_gguf_path, fingerprint_model, load_base
from agent.config import Settings

__all__ = ["Base", "BaseInfo", "Settings", "default_gguf_path", "fingerprint_model", "load_base"]
