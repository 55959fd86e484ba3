"""Archive limits: what a skill export or a pack may unpack, which revisions it may carry, and no bytecode.

- A skill archive lands only the revisions its manifest names; anything else is refused, naming the member.
- Everything an extraction writes is counted against one budget, in bytes actually written, and a pack's budget
  also covers the skill archives inside it (which the store unpacks): a small pack cannot unpack into a large one.
- A pack never installs Python bytecode (`__pycache__/`, `.pyc`, `.pyo`), and a trusted pack's tools are always
  compiled from the reviewed `.py` source, so a planted `.pyc` can never run instead of it.
"""

from __future__ import annotations

import importlib.util
import io
import marshal
import shutil
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import skills.packs.install as core
import skills.store as store_module
from skills import SkillStore, UnsafeArchiveError, UserError
from skills.files import ArchiveBudget, extract_member
from skills.packs import create_pack, dump_manifest, install_pack, load_pack_tools, read_manifest

Adapter = Callable[[str], Path]
Member = tuple[tarfile.TarInfo, bytes]

# A tool module as a reviewer reads it, and the code a planted .pyc would run instead.
SOURCE = b'def which() -> str:\n    return "source"\n\n\nTOOLS = [which]\n'
EVIL = 'def which() -> str:\n    return "bytecode"\n\n\nTOOLS = [which]\n'


# ------------------------------------------------------------------------------------------------ helpers


def file_member(name: str, data: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def members_of(archive: Path, top: str | None = None) -> list[Member]:
    """The regular-file members of an archive, in order; or of a folder, under `top/`."""
    if archive.is_dir():
        assert top is not None
        files = sorted(p for p in archive.rglob("*") if p.is_file())
        return [file_member(f"{top}/{p.relative_to(archive).as_posix()}", p.read_bytes()) for p in files]
    out = []
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            handle = tar.extractfile(member) if member.isfile() else None
            if handle is not None:
                out.append(file_member(member.name, handle.read()))
    return out


def write_tar(path: Path, members: list[Member]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data))
    return path


def unpacked_size(archive: Path) -> int:
    with tarfile.open(archive) as tar:
        return sum(m.size for m in tar.getmembers() if m.isfile())


def nothing_landed(store: SkillStore, names: set[str]) -> None:
    assert {s.name for s in store.list()} == names
    assert not [p for area in (".tmp", ".trash") for p in (store.root / area).rglob("*") if p.is_file()]


def planted_pyc(source: bytes, code_text: str, filename: str) -> bytes:
    """A hash-based .pyc (PEP 552) whose header matches `source` but whose code is `code_text`.

    "Checked" means Python compares the source's hash before using it: the hash is the reviewed source's, so Python
    accepts it. (A timestamp pyc would go stale when a pack is extracted, as extraction sets new mtimes.)
    """
    flags = 0b11  # hash-based, checked against the source
    code = compile(code_text, filename, "exec")
    return (
        importlib.util.MAGIC_NUMBER
        + flags.to_bytes(4, "little")
        + importlib.util.source_hash(source)
        + marshal.dumps(code)
    )


def cache_name(module_file: str) -> str:
    """`__pycache__/<stem>.cpython-3XX.pyc`: where this Python looks for `module_file`'s bytecode."""
    return Path(importlib.util.cache_from_source(module_file)).relative_to(Path(module_file).parent).as_posix()


@pytest.fixture
def src(tmp_path: Path, tiny: Any, adapter: Adapter) -> SkillStore:
    store = SkillStore(tmp_path / "src-skills", base_fingerprint=tiny.fingerprint)
    store.create("alpha", adapter("alpha"), kind="tool_habit", description="answers pong")
    return store


@pytest.fixture
def packs_dir(tmp_path: Path) -> Path:
    return tmp_path / "home" / "packs"


@pytest.fixture
def which_tools(tmp_path: Path) -> Path:
    path = tmp_path / "devtools" / "which_tools.py"
    path.parent.mkdir()
    path.write_bytes(SOURCE)
    return path


def rewrite_skill_archive(pack: Path, members: list[Member]) -> None:
    """Replace the pack folder's one skill archive and update its sha256 in pack.toml (a self-consistent pack)."""
    manifest = read_manifest(pack)
    skill = manifest.skills[0]
    inner = write_tar(pack / skill.archive, members)
    updated = skill.model_copy(update={"sha256": core.sha256_file(inner)})
    (pack / "pack.toml").write_text(dump_manifest(manifest.model_copy(update={"skills": (updated,)})))


# ------------------------------------------------------------------------------------------------ revisions


@pytest.mark.parametrize("folder", ["7", "2", "01", "\u0661", "1 "])
def test_a_revision_the_manifest_does_not_name_is_refused(
    src: SkillStore, store: SkillStore, tmp_path: Path, folder: str
) -> None:
    """revs/<n> beyond the manifest's list (a plain extra number, a zero-padded or Arabic-Indic '1') never lands."""
    members = members_of(src.export("alpha", tmp_path / "alpha.tar.gz"))
    extra = [
        file_member(m.name.replace("/revs/1/", f"/revs/{folder}/"), data) for m, data in members if "/revs/1/" in m.name
    ]
    archive = write_tar(tmp_path / "hidden.tar.gz", [*members, *extra])
    with pytest.raises(UnsafeArchiveError, match=r"revs/.*(not a revision|does not name)") as info:
        store.import_archive(archive)
    assert extra[0][0].name in str(info.value)
    nothing_landed(store, set())


def test_the_manifest_may_come_last(src: SkillStore, store: SkillStore, tmp_path: Path) -> None:
    """Control: revisions are checked against the manifest wherever it sits in the archive (tar order is free)."""
    members = members_of(src.export("alpha", tmp_path / "alpha.tar.gz"))
    assert members[0][0].name == "alpha/manifest.json"  # what `export` writes
    store.import_archive(write_tar(tmp_path / "late.tar.gz", [*members[1:], members[0]]))
    assert store.exists("alpha")


def test_a_pack_whose_skill_archive_hides_revisions_installs_nothing(
    src: SkillStore, store: SkillStore, packs_dir: Path, tmp_path: Path
) -> None:
    """The issue's probe: a small pack whose skill archive holds revs/7..9 of 60 MiB each (zeros compress well)."""
    pack = create_pack("hider", ["alpha"], [], tmp_path / "hider", store=src)
    members = members_of(pack / "skills" / "alpha.tar.gz")
    blob = bytes(60 << 20)
    hidden = [file_member(f"alpha/revs/{n}/adapter_model.safetensors", blob) for n in (7, 8, 9)]
    rewrite_skill_archive(pack, [*members, *hidden])
    archive = write_tar(tmp_path / "hider.tar.gz", members_of(pack, "hider"))
    assert archive.stat().st_size < 2 << 20  # a couple of MB at most, for 180 MiB inside
    with pytest.raises(UnsafeArchiveError, match=r"'alpha/revs/7/adapter_model.safetensors'.*does not name"):
        install_pack(archive, store, packs_dir)
    nothing_landed(store, set())
    assert not (packs_dir / "hider").exists()
    with pytest.raises(UnsafeArchiveError, match="does not name"):  # `skills import` of the inner archive
        store.import_archive(pack / "skills" / "alpha.tar.gz")
    nothing_landed(store, set())


# ------------------------------------------------------------------------------------------------ byte budget


def test_an_import_over_its_byte_budget_is_refused_naming_the_member(
    src: SkillStore, store: SkillStore, tmp_path: Path
) -> None:
    archive = src.export("alpha", tmp_path / "alpha.tar.gz")
    with pytest.raises(
        UnsafeArchiveError, match=r"member 'alpha/revs/1/.*' takes .* past 4,096 bytes unpacked"
    ) as info:
        store.import_archive(archive, budget=ArchiveBudget("this test", max_bytes=4096))
    assert info.value.hint
    nothing_landed(store, set())
    with pytest.raises(UnsafeArchiveError, match="more than 2 members"):
        store.import_archive(archive, budget=ArchiveBudget("this test", max_bytes=1 << 30, max_members=2))
    nothing_landed(store, set())
    store.import_archive(archive, budget=ArchiveBudget("this test", max_bytes=unpacked_size(archive)))  # exactly fits


def test_the_default_skill_archive_limit_applies(
    src: SkillStore, store: SkillStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = src.export("alpha", tmp_path / "alpha.tar.gz")
    monkeypatch.setattr(store_module, "MAX_SKILL_ARCHIVE_BYTES", unpacked_size(archive) - 1)
    with pytest.raises(UnsafeArchiveError, match="unpacked"):
        store.import_archive(archive)
    nothing_landed(store, set())


@pytest.mark.parametrize("as_archive", [False, True])
def test_a_pack_budget_counts_its_skill_archives_unpacked(
    src: SkillStore,
    store: SkillStore,
    packs_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    as_archive: bool,
) -> None:
    """Before, a pack counted its skill archives compressed, and the store then unpacked them outside any limit."""
    pack = create_pack("budget", ["alpha"], [], tmp_path / "budget", store=src)
    own = sum(p.stat().st_size for p in pack.rglob("*") if p.is_file())
    inner = unpacked_size(pack / "skills" / "alpha.tar.gz")
    monkeypatch.setattr(core, "MAX_PACK_BYTES", own + inner // 2)
    source = write_tar(tmp_path / "budget.tar.gz", members_of(pack, "budget")) if as_archive else pack
    with pytest.raises(UnsafeArchiveError, match=r"takes pack budget.* past .* unpacked"):
        install_pack(source, store, packs_dir)
    nothing_landed(store, set())
    monkeypatch.setattr(core, "MAX_PACK_BYTES", own + inner)  # the whole pack, its skills unpacked once
    install_pack(source, store, packs_dir)
    assert store.exists("alpha")


class _LyingTar:
    """A tar whose member yields more bytes than its header declares (what a decompression bomb amounts to)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def extractfile(self, member: tarfile.TarInfo) -> io.BytesIO:
        return io.BytesIO(self.data)


def test_extraction_counts_the_bytes_written_not_the_declared_size(tmp_path: Path) -> None:
    member = tarfile.TarInfo("a/b.bin")
    member.size = 10
    budget = ArchiveBudget("this test", max_bytes=1 << 20)
    with pytest.raises(UnsafeArchiveError, match="more bytes than its header declares"):
        extract_member(_LyingTar(bytes(5 << 20)), member, tmp_path / "b.bin", label="test", budget=budget)
    assert budget.bytes_used <= 1 << 20
    budget = ArchiveBudget("this test", max_bytes=100)
    member.size = 50
    extract_member(_LyingTar(bytes(50)), member, tmp_path / "c.bin", label="test", budget=budget)
    member.size = 51
    with pytest.raises(UnsafeArchiveError, match="past 100 bytes unpacked"):
        extract_member(_LyingTar(bytes(51)), member, tmp_path / "d.bin", label="test", budget=budget)


def test_a_member_that_appears_twice_in_a_skill_archive_is_refused(
    src: SkillStore, store: SkillStore, tmp_path: Path
) -> None:
    members = members_of(src.export("alpha", tmp_path / "alpha.tar.gz"))
    archive = write_tar(tmp_path / "twice.tar.gz", [*members, members[-1]])
    with pytest.raises(UnsafeArchiveError, match="twice"):
        store.import_archive(archive)
    nothing_landed(store, set())


# ------------------------------------------------------------------------------------------------ bytecode


def test_control_the_planted_pyc_is_what_python_would_run(tmp_path: Path) -> None:
    """Control for the tests below: next to its source, this .pyc really runs instead of the source."""
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "which_tools.py").write_bytes(SOURCE)
    pyc = folder / cache_name(str(folder / "which_tools.py"))
    pyc.parent.mkdir()
    pyc.write_bytes(planted_pyc(SOURCE, EVIL, str(folder / "which_tools.py")))
    spec = importlib.util.spec_from_file_location("habitloop_probe_pyc", folder / "which_tools.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.which() == "bytecode"


@pytest.mark.parametrize("member", ["__pycache__/{cache}", "which_tools.pyc", "sub/which_tools.PYO"])
def test_a_pack_archive_with_bytecode_is_refused(
    src: SkillStore, store: SkillStore, packs_dir: Path, tmp_path: Path, which_tools: Path, member: str
) -> None:
    pack = create_pack("bc", ["alpha"], [f"{which_tools}:TOOLS"], tmp_path / "bc", store=src)
    name = member.format(cache=Path(cache_name(str(pack / "which_tools.py"))).name)
    pyc = planted_pyc(SOURCE, EVIL, str(pack / "which_tools.py"))
    archive = write_tar(tmp_path / "bc.tar.gz", [*members_of(pack, "bc"), file_member(f"bc/{name}", pyc)])
    with pytest.raises(UnsafeArchiveError, match="bytecode") as info:
        install_pack(archive, store, packs_dir, trust_code=True)
    assert f"bc/{name}" in str(info.value) and info.value.hint
    nothing_landed(store, set())
    assert not (packs_dir / "bc").exists()


def test_a_pack_folder_installs_without_its_bytecode(
    src: SkillStore, store: SkillStore, packs_dir: Path, tmp_path: Path, which_tools: Path
) -> None:
    """A developer's folder has __pycache__ (and may have stray .pyc): skipped, the installed copy has none."""
    pack = create_pack("bc", ["alpha"], [f"{which_tools}:TOOLS"], tmp_path / "bc", store=src)
    pyc = planted_pyc(SOURCE, EVIL, str(pack / "which_tools.py"))
    cached = pack / cache_name(str(pack / "which_tools.py"))
    cached.parent.mkdir()
    cached.write_bytes(pyc)
    (pack / "which_tools.pyc").write_bytes(pyc)
    (pack / "which_tools.pyo").write_bytes(pyc)
    installed = Path(install_pack(pack, store, packs_dir, trust_code=True).path)
    assert not [p for p in installed.rglob("*") if p.suffix in (".pyc", ".pyo") or p.name == "__pycache__"]
    assert [tool() for tool in load_pack_tools("bc", packs_dir)] == ["source"]


def test_tools_load_from_the_source_even_with_bytecode_planted_after_install(
    src: SkillStore, store: SkillStore, packs_dir: Path, tmp_path: Path, which_tools: Path
) -> None:
    """Whatever appears in the installed folder later, `load_pack_tools` compiles the reviewed .py (and writes no
    __pycache__ there itself)."""
    pack = create_pack("late", ["alpha"], [f"{which_tools}:TOOLS"], tmp_path / "late", store=src)
    installed = Path(install_pack(pack, store, packs_dir, trust_code=True).path)
    cached = installed / cache_name(str(installed / "which_tools.py"))
    cached.parent.mkdir()
    cached.write_bytes(planted_pyc(SOURCE, EVIL, str(installed / "which_tools.py")))
    try:
        assert [tool() for tool in load_pack_tools("late", packs_dir)] == ["source"]
    finally:
        for name in [n for n in sys.modules if n.startswith("habitloop_pack__late__")]:
            del sys.modules[name]
    shutil.rmtree(cached.parent)
    for name in [n for n in sys.modules if n.startswith("habitloop_pack__late__")]:
        del sys.modules[name]
    load_pack_tools("late", packs_dir)
    assert not (installed / "__pycache__").exists()


def test_bytecode_is_refused_in_skill_archives_too(src: SkillStore, store: SkillStore, tmp_path: Path) -> None:
    members = members_of(src.export("alpha", tmp_path / "alpha.tar.gz"))
    archive = write_tar(tmp_path / "pyc.tar.gz", [*members, file_member("alpha/__pycache__/x.cpython-311.pyc", b"x")])
    with pytest.raises(UserError):
        store.import_archive(archive)
    nothing_landed(store, set())


@pytest.mark.parametrize("tar_format", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_a_huge_tar_header_is_refused_before_it_is_read_into_memory(
    src: SkillStore, store: SkillStore, packs_dir: Path, tmp_path: Path, tar_format: int
) -> None:
    """tarfile reads a GNU long name or a pax record whole while parsing a header: a few KB of gzip could make it
    hold GBs. 4 MiB stands in for them here; anything over `MAX_TAR_HEADER` is refused unread."""
    members = members_of(src.export("alpha", tmp_path / "alpha.tar.gz"))
    bomb = file_member("alpha/" + "a" * (4 << 20), b"x")
    archive = tmp_path / "header.tar.gz"
    with tarfile.open(archive, "w:gz", format=tar_format) as tar:
        for info, data in [*members, bomb]:
            tar.addfile(info, io.BytesIO(data))
    assert archive.stat().st_size < 100 << 10
    with pytest.raises(UnsafeArchiveError, match="tar header"):
        store.import_archive(archive)
    nothing_landed(store, set())
    pack = create_pack("hdr", ["alpha"], [], tmp_path / "hdr", store=src)
    with tarfile.open(tmp_path / "hdr.tar.gz", "w:gz", format=tar_format) as tar:
        for info, data in [*members_of(pack, "hdr"), file_member("hdr/" + "b" * (4 << 20), b"x")]:
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(UnsafeArchiveError, match="tar header"):
        install_pack(tmp_path / "hdr.tar.gz", store, packs_dir)
    nothing_landed(store, set())
