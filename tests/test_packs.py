"""Skill packs: create, install (folder / archive / built-in), list, show, remove, and every refusal.

Every hostile pack is built by hand here; each refusal is checked to leave nothing behind: no pack folder, no
skill in the store, no staging debris.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import skills
import skills.packs.install
from skills import (
    BaseMismatchError,
    HabitloopError,
    SkillExistsError,
    SkillStore,
    UnsafeArchiveError,
    UserError,
)
from skills.files import sha256_file
from skills.packs import (
    PackManifest,
    PackSkill,
    PackTask,
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
)

Adapter = Callable[[str], Path]
HEX = "0" * 64

TOOL_MODULE = '''
from pathlib import Path

from tools import tool

# Importing this module leaves a trace: the tests check that installing a pack never imports it.
Path(__file__).with_name("IMPORTED").write_text("yes")


@tool
def shout(text: str) -> str:
    """Say it louder.

    Args:
        text: what to say.
    """
    return text.upper() + "!"


TOOLS = [shout]
'''


# ------------------------------------------------------------------------------------------------ helpers


@pytest.fixture
def src(tmp_path: Path, tiny: Any, adapter: Adapter) -> SkillStore:
    """A developer's store with skills 'alpha' and 'beta', from which packs are made."""
    store = SkillStore(tmp_path / "src-skills", base_fingerprint=tiny.fingerprint)
    store.create("alpha", adapter("alpha"), kind="tool_habit", description="answers pong")
    store.create("beta", adapter("beta"), kind="style")
    return store


@pytest.fixture
def tool_file(tmp_path: Path) -> Path:
    path = tmp_path / "devtools" / "shout_tools.py"
    path.parent.mkdir()
    path.write_text(TOOL_MODULE)
    return path


@pytest.fixture
def packs_dir(tmp_path: Path) -> Path:
    return tmp_path / "home" / "packs"


def make_pack(src: SkillStore, out: Path, skills: tuple[str, ...] = ("alpha",), tools: tuple[str, ...] = ()) -> Path:
    return create_pack(
        "demo-pack",
        list(skills),
        list(tools),
        out,
        store=src,
        version="1.2.0",
        description="a pack for tests",
        tasks=[PackTask(prompt="ping", checker=TaskChecker(kind="contains", value="pong"))],
    )


def nothing_left(store: SkillStore, packs_dir: Path, skills_before: set[str] | None = None) -> None:
    """No pack installed, no staging debris, the store exactly as before."""
    assert {s.name for s in store.list()} == (skills_before or set())
    if packs_dir.exists():
        assert {p.name for p in packs_dir.iterdir()} <= {".lock", ".tmp", ".trash"}
        assert not [p for p in packs_dir.rglob("*") if p.is_file() and p.name != ".lock"]
    assert not [p for area in (".tmp", ".trash") for p in (store.root / area).rglob("*") if p.is_file()]


def pack_members(folder: Path, top: str = "demo-pack") -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """The members of a well-formed archive of `folder`, to be tampered with."""
    members = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        info = tarfile.TarInfo(f"{top}/{path.relative_to(folder).as_posix()}")
        info.size = len(data)
        members.append((info, data))
    return members


def write_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def special_member(name: str, kind: bytes, link: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info, None


# ------------------------------------------------------------------------------------------------ the happy path


@pytest.mark.parametrize("as_archive", [False, True])
def test_create_install_list_show_remove(
    src: SkillStore, store: SkillStore, packs_dir: Path, tmp_path: Path, as_archive: bool
) -> None:
    out = tmp_path / ("demo.tar.gz" if as_archive else "demo-pack")
    make_pack(src, out, skills=("alpha", "beta"))
    pack = install_pack(out, store, packs_dir)
    assert pack.manifest.name == "demo-pack" and pack.manifest.version == "1.2.0"
    assert pack.created_skills == ("alpha", "beta") and not pack.trust_code
    assert (pack.source_sha256 is not None) == as_archive
    # the skills arrive intact: same tensors as in the developer's store
    for name in ("alpha", "beta"):
        mine, theirs = store.read_adapter(name), src.read_adapter(name)
        assert mine.tensors.keys() == theirs.tensors.keys()
        assert all(torch.equal(mine.tensors[k], theirs.tensors[k]) for k in mine.tensors)
    assert store.get("alpha").description == "answers pong"
    assert [p.manifest.name for p in list_packs(packs_dir)] == ["demo-pack"]
    assert show("demo-pack", packs_dir).manifest.tasks[0].checker == TaskChecker(kind="contains", value="pong")
    report = remove_pack("demo-pack", store, packs_dir)
    assert set(report.removed_skills) == {"alpha", "beta"} and report.kept_skills == {}
    nothing_left(store, packs_dir)
    with pytest.raises(UserError, match="no pack named"):
        show("demo-pack", packs_dir)


def test_a_pack_is_installed_once(src: SkillStore, store: SkillStore, packs_dir: Path, tmp_path: Path) -> None:
    make_pack(src, tmp_path / "p")
    install_pack(tmp_path / "p", store, packs_dir)
    with pytest.raises(UserError, match="already installed"):
        install_pack(tmp_path / "p", store, packs_dir)
    assert [p.manifest.name for p in list_packs(packs_dir)] == ["demo-pack"]
    assert {s.name for s in store.list()} == {"alpha"}


def test_create_refuses_an_existing_output_and_an_empty_pack(src: SkillStore, tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    with pytest.raises(UserError, match="already exists"):
        make_pack(src, tmp_path / "taken")
    with pytest.raises(UserError, match="at least one skill or tool"):
        create_pack("empty", [], [], tmp_path / "empty", store=src)
    assert not (tmp_path / "empty").exists()


# ------------------------------------------------------------------------------------------------ code and trust


def test_install_never_imports_tools_and_untrusted_tools_stay_unimportable(
    src: SkillStore, store: SkillStore, packs_dir: Path, tmp_path: Path, tool_file: Path
) -> None:
    out = make_pack(src, tmp_path / "p", tools=(f"{tool_file}:TOOLS",))
    assert read_manifest(out).tools == ("shout_tools:TOOLS",)
    assert (out / "shout_tools.py").is_file()
    pack = install_pack(out, store, packs_dir)
    assert not pack.trust_code
    assert not list(packs_dir.rglob("IMPORTED")), "installing ran the pack's code"
    with pytest.raises(UserError, match="--trust-code"):
        load_pack_tools("demo-pack", packs_dir)
    assert not list(packs_dir.rglob("IMPORTED"))


def test_trusted_tools_import_and_work(
    src: SkillStore, store: SkillStore, packs_dir: Path, tmp_path: Path, tool_file: Path
) -> None:
    out = make_pack(src, tmp_path / "p.tar.gz", tools=(f"{tool_file}:TOOLS",))
    pack = install_pack(out, store, packs_dir, trust_code=True)
    assert pack.trust_code and show("demo-pack", packs_dir).trust_code
    assert not list(packs_dir.rglob("IMPORTED")), "install itself must not import, even when trusted"
    (shout,) = load_pack_tools("demo-pack", packs_dir)
    assert shout.name == "shout" and shout.invoke({"text": "hi"}).output == "HI!"
    assert list(packs_dir.rglob("IMPORTED"))


def test_agent_load_tools_reads_a_trusted_pack(
    src: SkillStore, store: SkillStore, tmp_path: Path, tool_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.cli.resources import load_tools
    from agent.config import Settings

    monkeypatch.setenv("HABITLOOP_HOME", str(tmp_path / "home"))
    out = make_pack(src, tmp_path / "p", tools=(f"{tool_file}:TOOLS",))
    install_pack(out, store, Settings().packs_dir, trust_code=True)
    assert [t.name for t in load_tools("pack:demo-pack")] == ["shout"]


def test_a_tool_module_missing_from_the_pack_is_refused(
    src: SkillStore, store: SkillStore, packs_dir: Path, tmp_path: Path
) -> None:
    out = make_pack(src, tmp_path / "p")
    manifest = read_manifest(out).model_copy(update={"tools": ("ghost:TOOLS",)})
    (out / "pack.toml").write_text(dump_manifest(manifest))
    with pytest.raises(UserError, match="ghost.py"):
        install_pack(out, store, packs_dir)
    nothing_left(store, packs_dir)


# ------------------------------------------------------------------------------------------------ base, conflicts


def test_a_pack_for_another_base_is_refused_with_both_fingerprints(
    src: SkillStore, packs_dir: Path, tmp_path: Path
) -> None:
    make_pack(src, tmp_path / "p")
    other = SkillStore(tmp_path / "other", base_fingerprint="sha256:another-base")
    with pytest.raises(BaseMismatchError) as raised:
        install_pack(tmp_path / "p", other, packs_dir)
    assert src.base_fingerprint in str(raised.value) and "sha256:another-base" in str(raised.value)
    nothing_left(other, packs_dir)


def test_a_store_without_a_base_fingerprint_cannot_install(src: SkillStore, packs_dir: Path, tmp_path: Path) -> None:
    make_pack(src, tmp_path / "p")
    with pytest.raises(UserError, match="fingerprint"):
        install_pack(tmp_path / "p", SkillStore(tmp_path / "plain"), packs_dir)


def test_a_different_skill_of_the_same_name_is_refused(
    src: SkillStore, store: SkillStore, packs_dir: Path, tmp_path: Path, adapter: Adapter
) -> None:
    store.create("alpha", adapter("gamma"), kind="style")
    make_pack(src, tmp_path / "p")
    with pytest.raises(SkillExistsError, match="different skill named 'alpha'"):
        install_pack(tmp_path / "p", store, packs_dir)
    nothing_left(store, packs_dir, {"alpha"})


def test_skills_shared_between_packs_stay_until_the_last_pack_goes(
    src: SkillStore, store: SkillStore, packs_dir: Path, tmp_path: Path
) -> None:
    make_pack(src, tmp_path / "one", skills=("alpha",))
    create_pack("other-pack", ["alpha", "beta"], [], tmp_path / "two", store=src)
    install_pack(tmp_path / "one", store, packs_dir)
    second = install_pack(tmp_path / "two", store, packs_dir)
    assert second.created_skills == ("beta",) and second.shared_skills == {"alpha": "pack"}
    first_gone = remove_pack("demo-pack", store, packs_dir)
    assert first_gone.removed_skills == () and "other-pack" in first_gone.kept_skills["alpha"]
    assert store.exists("alpha")
    second_gone = remove_pack("other-pack", store, packs_dir)
    assert set(second_gone.removed_skills) == {"alpha", "beta"}
    nothing_left(store, packs_dir)


def test_remove_keeps_skills_that_predate_the_pack_or_changed_since(
    src: SkillStore, store: SkillStore, packs_dir: Path, tmp_path: Path, adapter: Adapter
) -> None:
    store.import_archive(src.export("alpha", tmp_path / "alpha.tar.gz"))  # the user already had this exact skill
    make_pack(src, tmp_path / "p", skills=("alpha", "beta"))
    pack = install_pack(tmp_path / "p", store, packs_dir)
    assert pack.shared_skills == {"alpha": "store"} and pack.created_skills == ("beta",)
    store.add_revision("beta", adapter("gamma"))  # e.g. consolidation trained beta further
    report = remove_pack("demo-pack", store, packs_dir)
    assert report.removed_skills == ()
    assert "before the pack" in report.kept_skills["alpha"] and "new revisions" in report.kept_skills["beta"]
    assert {s.name for s in store.list()} == {"alpha", "beta"}


def test_remove_can_keep_skills(src: SkillStore, store: SkillStore, packs_dir: Path, tmp_path: Path) -> None:
    make_pack(src, tmp_path / "p")
    install_pack(tmp_path / "p", store, packs_dir)
    report = remove_pack("demo-pack", store, packs_dir, keep_skills=True)
    assert report.removed_skills == () and store.exists("alpha") and list_packs(packs_dir) == []


# ------------------------------------------------------------------------------------------------ all or nothing


def test_a_failure_after_importing_skills_rolls_them_back(
    src: SkillStore, store: SkillStore, packs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_pack(src, tmp_path / "p", skills=("alpha", "beta"))

    def disk_full(path: Path, payload: Any) -> None:
        assert store.exists("alpha") and store.exists("beta"), "the skills were imported before the record"
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(skills.packs.install, "atomic_write_json", disk_full)
    with pytest.raises(OSError, match="No space"):
        install_pack(tmp_path / "p", store, packs_dir)
    nothing_left(store, packs_dir)


def test_a_failed_second_skill_import_rolls_back_the_first(
    src: SkillStore, store: SkillStore, packs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_pack(src, tmp_path / "p", skills=("alpha", "beta"))
    real = SkillStore.import_archive
    calls: list[str] = []

    def flaky(self: SkillStore, archive: Path, **kwargs: Any) -> Any:
        if self.root == store.root:
            calls.append(str(archive))
            if len(calls) == 2:
                raise KeyboardInterrupt  # even an interrupt leaves nothing half-installed
        return real(self, archive, **kwargs)

    monkeypatch.setattr(SkillStore, "import_archive", flaky)
    with pytest.raises(KeyboardInterrupt):
        install_pack(tmp_path / "p", store, packs_dir)
    assert len(calls) == 2
    nothing_left(store, packs_dir)


# ------------------------------------------------------------------------------------------------ hostile packs


@pytest.fixture
def good_members(src: SkillStore, tmp_path: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    return pack_members(make_pack(src, tmp_path / "good"))


def test_the_hand_built_archive_is_installable(
    good_members: list[Any], store: SkillStore, packs_dir: Path, tmp_path: Path
) -> None:
    """The control: the untampered members install, so each refusal below is caused by its one change."""
    install_pack(write_tar(tmp_path / "ok.tar.gz", good_members), store, packs_dir)
    assert store.exists("alpha")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (file_member("/tmp/habitloop-escape", b"x"), "absolute"),
        (file_member("demo-pack/../../escape.txt", b"x"), "'..'"),
        (file_member("../escape.txt", b"x"), "'..'"),
        (special_member("demo-pack/link", tarfile.SYMTYPE, "/etc/passwd"), "link"),
        (special_member("demo-pack/up", tarfile.SYMTYPE, "../../outside"), "link"),
        (special_member("demo-pack/hard", tarfile.LNKTYPE, "demo-pack/pack.toml"), "link"),
        (special_member("demo-pack/dev", tarfile.CHRTYPE), "not a regular file"),
        (special_member("demo-pack/fifo", tarfile.FIFOTYPE), "not a regular file"),
        (file_member("demo-pack/weights/adapter_model.bin", b"\x80\x04K."), "pickle"),
        (file_member("demo-pack/model.pt", b"\x80\x04K."), "pickle"),
        (file_member("demo-pack/installed.json", b'{"trust_code": true}'), "installed.json"),
        (file_member("demo-pack/pack.toml", b"name = 'twice'"), "twice"),
    ],
)
def test_hostile_archives_are_refused_and_leave_nothing(
    good_members: list[Any], store: SkillStore, packs_dir: Path, tmp_path: Path, extra: Any, needle: str
) -> None:
    archive = write_tar(tmp_path / "bad.tar.gz", [*good_members, extra])
    with pytest.raises(UnsafeArchiveError, match=needle):
        install_pack(archive, store, packs_dir)
    nothing_left(store, packs_dir)
    assert not Path("/tmp/habitloop-escape").exists() and not (tmp_path / "escape.txt").exists()


def test_a_folder_with_a_link_or_pickle_or_fifo_is_refused(
    src: SkillStore, store: SkillStore, packs_dir: Path, tmp_path: Path
) -> None:
    out = make_pack(src, tmp_path / "p")
    for make, needle in (
        (lambda p: (p / "evil").symlink_to("/etc/passwd"), "link"),
        (lambda p: (p / "weights.pkl").write_bytes(b"\x80\x04K."), "pickle"),
        (lambda p: os.mkfifo(p / "pipe"), "not a regular file"),
    ):
        copy = tmp_path / f"copy-{needle.split()[0]}"
        shutil.copytree(out, copy)
        make(copy)
        with pytest.raises(UnsafeArchiveError, match=needle):
            install_pack(copy, store, packs_dir)
        nothing_left(store, packs_dir)


def test_a_skill_archive_that_does_not_match_its_checksum_is_refused(
    src: SkillStore, store: SkillStore, packs_dir: Path, tmp_path: Path
) -> None:
    out = make_pack(src, tmp_path / "p")
    shutil.copyfile(src.export("beta", tmp_path / "beta.tar.gz"), out / "skills" / "alpha.tar.gz")
    with pytest.raises(UnsafeArchiveError, match="sha256"):
        install_pack(out, store, packs_dir)
    nothing_left(store, packs_dir)


def test_a_skill_archive_with_pickle_weights_inside_is_refused(
    src: SkillStore, store: SkillStore, packs_dir: Path, tmp_path: Path
) -> None:
    """The nested archive goes through the store's own import checks (here: a pickle member in the skill export)."""
    out = make_pack(src, tmp_path / "p")
    inner = out / "skills" / "alpha.tar.gz"
    with tarfile.open(inner) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]  # type: ignore[union-attr]
    write_tar(inner, [*members, file_member("alpha/revs/1/adapter_model.bin", b"\x80\x04K.")])
    manifest = read_manifest(out)
    skill = manifest.skills[0].model_copy(update={"sha256": sha256_file(inner)})
    (out / "pack.toml").write_text(dump_manifest(manifest.model_copy(update={"skills": (skill,)})))
    with pytest.raises(UnsafeArchiveError, match="pickle"):
        install_pack(out, store, packs_dir)
    nothing_left(store, packs_dir)


def test_a_skill_archive_naming_another_skill_is_refused(
    src: SkillStore, store: SkillStore, packs_dir: Path, tmp_path: Path
) -> None:
    out = make_pack(src, tmp_path / "p")
    manifest = read_manifest(out)
    skill = manifest.skills[0].model_copy(update={"name": "gamma"})
    (out / "pack.toml").write_text(dump_manifest(manifest.model_copy(update={"skills": (skill,)})))
    with pytest.raises(UserError, match="holds skill 'alpha', not 'gamma'"):
        install_pack(out, store, packs_dir)
    nothing_left(store, packs_dir)


@pytest.mark.parametrize(
    "text",
    [
        'name = "x"',  # fields missing
        "not toml at all [[[",
        'schema_version = 99\nname = "x"\nversion = "1"\nlicense = "MIT"\nbase_fingerprint = "f"',
        'name = "../x"\nversion = "1"\nlicense = "MIT"\nbase_fingerprint = "f"',
        f'name = "x"\nversion = "1"\nlicense = "MIT"\nbase_fingerprint = "f"\n'
        f'[[skills]]\nname = "a"\narchive = "../../etc/a.tar.gz"\nsha256 = "{HEX}"',
        f'name = "x"\nversion = "1"\nlicense = "MIT"\nbase_fingerprint = "f"\n'
        f'[[skills]]\nname = "a"\narchive = "/etc/a.tar.gz"\nsha256 = "{HEX}"',
        'name = "x"\nversion = "1"\nlicense = "MIT"\nbase_fingerprint = "f"\ntools = ["../evil:X"]',
        'name = "x"\nversion = "1"\nlicense = "MIT"\nbase_fingerprint = "f"\ntools = ["os"]',
        'name = "x"\nversion = "1"\nlicense = "MIT"\nbase_fingerprint = "f"\nunknown = 1',
        'name = "x"\nversion = "1"\nlicense = "MIT"\nbase_fingerprint = "f"\n'
        '[[tasks]]\nprompt = "p"\nchecker = { kind = "regex", value = "(" }',
    ],
)
def test_bad_manifests_are_user_errors(text: str) -> None:
    with pytest.raises(UserError):
        parse_manifest(text)


def test_an_invalid_manifest_in_a_pack_is_refused_cleanly(
    src: SkillStore, store: SkillStore, packs_dir: Path, tmp_path: Path
) -> None:
    out = make_pack(src, tmp_path / "p")
    (out / "pack.toml").write_text('name = "Bad Name"\n')
    with pytest.raises(UserError, match="name"):
        install_pack(out, store, packs_dir)
    nothing_left(store, packs_dir)


# ------------------------------------------------------------------------------------------------ properties

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)
_slug = st.from_regex(r"[a-z0-9]([a-z0-9_-]{0,10}[a-z0-9])?", fullmatch=True)


@given(
    name=_slug,
    description=_text,
    license=_text.filter(lambda s: 0 < len(s) <= 200),
    fingerprint=_text.filter(lambda s: 0 < len(s) <= 200),
    prompts=st.lists(_text.filter(bool), max_size=3),
    value=_text.filter(bool),
)
def test_manifests_round_trip_through_toml(
    name: str, description: str, license: str, fingerprint: str, prompts: list[str], value: str
) -> None:
    manifest = PackManifest(
        name=name,
        version="1.0.0",
        description=description,
        license=license,
        base_fingerprint=fingerprint,
        skills=(PackSkill(name=name, archive=f"skills/{name}.tar.gz", sha256=HEX),),
        tools=("my_tools:TOOLS",),
        tasks=tuple(PackTask(prompt=p, checker=TaskChecker(kind="contains", value=value)) for p in prompts),
    )
    assert parse_manifest(dump_manifest(manifest)) == manifest


@given(st.text(max_size=400))
def test_parsing_any_text_is_a_manifest_or_a_user_error(text: str) -> None:
    try:
        parse_manifest(text)
    except UserError:
        pass


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2000), gzip_it=st.booleans())
def test_random_archive_bytes_are_refused_cleanly(
    data: bytes, gzip_it: bool, store: SkillStore, packs_dir: Path, tmp_path: Path
) -> None:
    import gzip

    archive = tmp_path / "random.tar.gz"
    archive.write_bytes(gzip.compress(data) if gzip_it else data)
    with pytest.raises(HabitloopError):
        install_pack(archive, store, packs_dir)
    nothing_left(store, packs_dir)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=10_000), flip=st.integers(min_value=0, max_value=10_000))
def test_damaged_pack_archives_are_refused_or_install_intact(
    cut: int, flip: int, src: SkillStore, store: SkillStore, packs_dir: Path, tmp_path: Path
) -> None:
    """A truncated or bit-flipped real pack: a clean refusal, or (if the damage missed everything) a full install."""
    good = tmp_path / "good.tar.gz"
    if not good.exists():
        make_pack(src, good)
    data = bytearray(good.read_bytes())
    data = data[: max(1, len(data) - cut)]
    data[flip % len(data)] ^= 0x40
    damaged = tmp_path / "damaged.tar.gz"
    damaged.write_bytes(bytes(data))
    try:
        install_pack(damaged, store, packs_dir)
    except HabitloopError:
        nothing_left(store, packs_dir)
    else:
        assert store.read_adapter("alpha").tensors
        remove_pack("demo-pack", store, packs_dir)


# ------------------------------------------------------------------------------------------------ checkers, builtins


def test_task_checkers() -> None:
    assert TaskChecker(kind="contains", value="391").check("it is 391")
    assert not TaskChecker(kind="contains", value="391").check(None)
    assert TaskChecker(kind="regex", value=r"^\d+$").check("42")
    assert TaskChecker(kind="tool_call", value="calculator").check("x", ["calculator"])
    assert not TaskChecker(kind="tool_call", value="calculator").check("x", [])


def test_builtin_packs_parse_and_ship_as_package_data() -> None:
    packs = builtin_packs()
    assert {"calculator-habit"} <= set(packs), packs  # the packs the README promises
    skills_dir = Path(skills.__file__).parent
    patterns = tomllib.loads((skills_dir.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = {path for pattern in patterns["skills"] for path in skills_dir.glob(pattern) if path.is_file()}
    for name, folder in packs.items():
        assert {path for path in folder.rglob("*") if path.is_file()} <= shipped, f"{name} is not package data"
        manifest = read_manifest(folder)
        assert manifest.name == name and manifest.skills and manifest.description
        for skill in manifest.skills:
            assert sha256_file(folder / skill.archive) == skill.sha256


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_packs_round_trip(
    src: SkillStore, tmp_path: Path, tool_file: Path, tiny: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """create -> install -> list -> show -> remove through `habitloop packs`, with --json everywhere."""
    from agent.cli import resources as cli_resources
    from agent.cli.app import app

    runner = CliRunner()
    monkeypatch.setattr(cli_resources, "base_fingerprint", lambda settings: tiny.fingerprint)
    shutil.copytree(src.root, tmp_path / "home" / "skills")
    env = {"HABITLOOP_HOME": str(tmp_path / "home")}

    def invoke(*args: str, code: int = 0) -> Any:
        result = runner.invoke(app, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result

    out = tmp_path / "cli.tar.gz"
    created = json.loads(invoke("packs", "create", "cli-pack", "--skill", "alpha", "--tools",
                                f"{tool_file}:TOOLS", "-o", str(out), "--json").output)  # fmt: skip
    assert created["path"] == str(out) and out.is_file()
    # the store already has alpha (the developer's own): installing shares it
    installed = json.loads(invoke("packs", "install", str(out), "--json").output)
    assert installed["name"] == "cli-pack" and installed["trust_code"] is False
    assert installed["shared_skills"] == {"alpha": "store"} and installed["tools"] == ["shout_tools:TOOLS"]
    listing = json.loads(invoke("packs", "list", "--json").output)
    assert [p["name"] for p in listing["packs"]] == ["cli-pack"]
    assert json.loads(invoke("packs", "show", "cli-pack", "--json").output)["skills"] == ["alpha"]
    assert "cli-pack" in invoke("packs", "list").output
    removed = json.loads(invoke("packs", "remove", "cli-pack", "--json").output)
    assert removed["removed_skills"] == [] and "alpha" in removed["kept_skills"]
    assert json.loads(invoke("packs", "list", "--json").output)["packs"] == []


def test_cli_errors_are_one_line_with_a_fix(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "HABITLOOP_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "packs", "show", "nope"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "no pack named 'nope'" in result.stderr and "fix:" in result.stderr
