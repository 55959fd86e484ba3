"""Skill packs: skills (and optionally tools and example tasks) shipped together, installed in one step.

- `manifest`: `pack.toml` and its models (`PackManifest`, `PackSkill`, `PackTask`, `TaskChecker`), read and written;
- `install`: `install_pack` (a folder, a `.tar.gz` of one, or a built-in pack's name) and `builtin_packs`;
- `installed`: what an install recorded (`InstalledPack`), `show`, `list_packs`, `load_pack_tools`, `remove_pack`;
- `create`: `create_pack`, a pack made of a store's skills and tool modules.

The built-in packs are package data under `builtin/`, one folder each (`pack.toml` + store export archives), each
trained by a script in `examples/` that anyone can rerun.
"""

from skills.packs.create import create_pack
from skills.packs.install import builtin_packs, install_pack
from skills.packs.installed import InstalledPack, RemoveReport, list_packs, load_pack_tools, remove_pack, show
from skills.packs.manifest import (
    PACK_FILE,
    PackManifest,
    PackSkill,
    PackTask,
    TaskChecker,
    dump_manifest,
    parse_manifest,
    read_manifest,
    write_manifest,
)

__all__ = [
    "PACK_FILE",
    "InstalledPack",
    "PackManifest",
    "PackSkill",
    "PackTask",
    "RemoveReport",
    "TaskChecker",
    "builtin_packs",
    "create_pack",
    "dump_manifest",
    "install_pack",
    "list_packs",
    "load_pack_tools",
    "parse_manifest",
    "read_manifest",
    "remove_pack",
    "show",
    "write_manifest",
]
