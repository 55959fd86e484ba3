"""Built-in skill packs: each folder here is a pack (`pack.toml` + store export archives), trained by a script in
`examples/` that anyone can rerun. The code that reads, installs and makes packs is `skills.packs` (this package's
`_core` module); the folders are package data.
"""

from skills.packs._core import (
    PACK_FILE,
    InstalledPack,
    PackManifest,
    PackSkill,
    PackTask,
    RemoveReport,
    TaskChecker,
    builtin_packs,
    create_pack,
    dump_manifest,
    install_pack,
    list_packs,
    load_pack_tools,
    parse_manifest,
    read_manifest,
    remove_pack,
    show,
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
