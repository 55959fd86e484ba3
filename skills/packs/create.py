"""Making a pack (`create_pack`): skills exported from a store, tool modules copied as single `.py` files, and
the `pack.toml` that lists them, as a folder or a `.tar.gz`."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import shutil
import tarfile
import uuid
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from skills.errors import BaseMismatchError, UserError
from skills.files import fsync_dir, sha256_file
from skills.manifest import validate_skill_name
from skills.packs.manifest import ATTR_NAME_RE, MODULE_NAME_RE, PackManifest, PackSkill, PackTask, write_manifest
from skills.store import SkillStore


def _tool_source(spec: str) -> tuple[Path, str]:
    """The single .py file behind a `module:attr` (or `path/to/file.py:attr`) and the spec it gets in the pack."""
    module, _, attr = spec.rpartition(":")
    if not module or not ATTR_NAME_RE.fullmatch(attr):
        raise UserError(f"tool {spec!r} is not 'module:attr'", hint="e.g. --tools my_tools:TOOLS")
    if module.endswith(".py"):
        path = Path(module).expanduser()
    else:
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError) as error:
            raise UserError(f"cannot find module {module!r} for tool {spec!r}: {error}") from error
        if found is None or not found.origin or not found.has_location:
            raise UserError(f"cannot find the file of module {module!r}", hint="give path/to/file.py:attr instead")
        path = Path(found.origin)
    if not path.is_file() or path.suffix != ".py" or path.name == "__init__.py":
        raise UserError(
            f"tool {spec!r}: {path} is not a single-file module",
            hint="a pack carries each tool module as one .py file; move the tools into one file",
        )
    stem = path.stem
    if not MODULE_NAME_RE.fullmatch(stem):
        raise UserError(f"tool {spec!r}: {path.name} is not a valid module name")
    return path, f"{stem}:{attr}"


def create_pack(
    name: str,
    skills: Sequence[str],
    tools: Sequence[str],
    out: Path | str,
    *,
    store: SkillStore,
    version: str = "0.1.0",
    description: str = "",
    license: str = "Apache-2.0",
    tasks: Sequence[PackTask] = (),
) -> Path:
    """Make a pack of skills from `store` and tool modules; `out` ending in `.tar.gz`/`.tgz` is an archive, else a
    folder (which must not exist yet). Written to a temporary name, then renamed: never half a pack.
    """
    validate_skill_name(name)
    out = Path(out).expanduser()
    if out.exists():
        raise UserError(f"{out} already exists", hint="pick another output path or remove it")
    if not skills and not tools:
        raise UserError("a pack needs at least one skill or tool", hint="pass --skill NAME or --tools module:attr")
    fingerprints = {store.get(s).base_fingerprint for s in skills} | (
        {store.base_fingerprint} if store.base_fingerprint else set()
    )
    if len(fingerprints) > 1:
        raise BaseMismatchError(
            f"the skills of pack {name!r} were trained on different bases: {', '.join(sorted(fingerprints))}",
            hint="a pack is for one base; make one pack per base",
        )
    if not fingerprints:
        raise UserError("a pack without skills needs the base fingerprint", hint="open the store with base_fingerprint")
    sources = [_tool_source(spec) for spec in tools]
    if len({spec.split(":")[0] for _, spec in sources}) != len({p for p, _ in sources}):
        raise UserError("two tool modules have the same file name", hint="rename one of them")
    archive = out.name.endswith((".tar.gz", ".tgz"))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.tmp"
    folder = staging / name if archive else staging
    try:
        folder.mkdir(parents=True)
        entries = []
        for skill in skills:
            relative = f"skills/{skill}.tar.gz"
            store.export(skill, folder / relative)
            entries.append(PackSkill(name=skill, archive=relative, sha256=sha256_file(folder / relative)))
        for path, _ in sources:
            shutil.copyfile(path, folder / path.name)
        manifest = PackManifest(
            name=name,
            version=version,
            description=description,
            license=license,
            base_fingerprint=fingerprints.pop(),
            skills=tuple(entries),
            tools=tuple(spec for _, spec in sources),
            tasks=tuple(tasks),
        )
        write_manifest(folder, manifest)
        if archive:
            data = staging / "pack.tar.gz"
            with tarfile.open(data, "w:gz") as tar:
                for file in sorted(p for p in folder.rglob("*") if p.is_file()):
                    tar.add(file, arcname=f"{name}/{file.relative_to(folder).as_posix()}", recursive=False)
            data.rename(out)
        else:
            staging.rename(out)
        fsync_dir(out.parent)
    except ValidationError as error:
        raise UserError(f"cannot create pack {name!r}: {error.errors()[0]['msg']}") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
