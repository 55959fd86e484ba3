"""The chromadb episode buffer: embedded `PersistentClient` by default, `HttpClient` when a server URL is given.

Layout of one episode in the collection:
- id: the trajectory id;
- document: the task text, the only thing chroma embeds (recall is "episodes whose task looks like this one");
- metadata:
  - `trajectory`: the full trajectory as JSON. It lives in the record itself rather than in a sidecar file so that an
    episode is written and deleted in one chroma operation (no sidecar to fall out of step after a crash), and so
    that every client of a chroma server sees the same episodes (a sidecar would sit on one client's disk);
  - `status` (str), `consolidated` (bool), `instance` (str; "" for none, which is why `add` refuses an empty
    instance string), `created_at` (float, `started_at` as a POSIX timestamp): what `where` filters on;
  - `skills` (a list of skill names, absent when none): chromadb 1.5 stores string lists and filters them with
    `$contains`, so the skill filter runs inside chroma too, embedded and over HTTP;
  - `format` (int): the layout version, for future migrations.

The collection uses cosine distance over unit vectors, so a search score is `1 - distance` clamped to [0, 1], the
same number `InMemoryBuffer` computes. Listings sort in Python (chroma has no order-by); a buffer holds thousands of
episodes, not millions.

chromadb records the embedding function's name and config with the collection and may rebuild it from that record,
so `ChromaEmbeddingFunction` implements chroma's full protocol (`name`, `get_config`, `build_from_config`) and is
registered with chroma when this module is imported; rebuilding never loads or downloads anything. We still pass our
function explicitly on every open (chroma's default function would download an ONNX model at the first add), and we
refuse to open a collection built by a different embedder (vectors of two embedders are not comparable).
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar, cast
from urllib.parse import urlsplit

import chromadb
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.config import Settings as ChromaSettings
from chromadb.errors import ChromaError, InternalError, InvalidArgumentError
from chromadb.utils.embedding_functions import register_embedding_function
from pydantic import ValidationError

from memory.buffer import (
    ALL_INSTANCES,
    EpisodeBuffer,
    EpisodeNotFoundError,
    EpisodeSummary,
    InstanceFilter,
    age_cutoff,
    check_capacity,
    check_consolidated_into,
    check_ids,
    check_k,
    check_limit,
    check_trajectory,
    newest_first,
    plan_evictions,
    similarity_score,
)
from memory.embed import Embedder, TextEmbedder, embedder_from_config
from memory.trajectory import OutcomeStatus, Trajectory
from skills.errors import OperatorError, UserError

FORMAT = 1
_EF_NAME = "habitloop"
# chroma keeps every write in its log until `sync_threshold` writes accumulate, and each single add got slower as
# that log grew (embedded, 2 KB trajectories: ~6 ms -> ~17 ms per add by 600 episodes with the default 1000).
# Flushing every 100 writes kept one add near 6-7 ms. Applies when the collection is created.
_HNSW_LOG = {"sync_threshold": 100, "batch_size": 100}
_P = ParamSpec("_P")
_R = TypeVar("_R")


class _UnavailableEmbedder:
    """Stands in when chroma rebuilds a function whose embedder kind this process does not know: opening still
    works (we always pass our own function), but embedding with the stand-in says what is missing."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._config = config

    @property
    def name(self) -> str:
        return str(self._config.get("name", "unknown"))

    @property
    def dimension(self) -> int:
        raise self._error()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        raise self._error()

    def config(self) -> dict[str, Any]:
        return dict(self._config.get("embedder", {}))

    def _error(self) -> OperatorError:
        return OperatorError(
            f"this collection was embedded by {self.name!r}, an embedder kind this process cannot rebuild",
            hint="register its kind with memory.embed.register_embedder, or pass the embedder explicitly",
        )


class ChromaEmbeddingFunction(EmbeddingFunction[Documents]):
    """Any `TextEmbedder` as a chromadb 1.5 embedding function (protocol: call, name, get_config, build_from_config).

    chroma stores `get_config()` with the collection: `{"name": <embedder name>, "embedder": <embedder config>}`.
    `build_from_config` rebuilds the embedder lazily (a real model loads at the first call, never downloads).
    """

    def __init__(self, embedder: TextEmbedder) -> None:
        self.embedder = embedder

    def __call__(self, input: Documents) -> Embeddings:
        return cast(Embeddings, self.embedder.embed(list(input)))

    @staticmethod
    def name() -> str:
        return _EF_NAME

    def get_config(self) -> dict[str, Any]:
        return {"name": self.embedder.name, "embedder": self.embedder.config()}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> ChromaEmbeddingFunction:
        try:
            embedder: TextEmbedder = embedder_from_config(dict(config.get("embedder", {})))
        except UserError:
            embedder = _UnavailableEmbedder(config)
        return ChromaEmbeddingFunction(embedder)

    def default_space(self) -> Space:
        return "cosine"  # our embedders return unit vectors

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "ip", "l2"]

    def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
        if old_config.get("name") != new_config.get("name"):
            raise ValueError(f"cannot switch embedder from {old_config.get('name')} to {new_config.get('name')}")

    def __repr__(self) -> str:
        return f"ChromaEmbeddingFunction({self.embedder!r})"


register_embedding_function(ChromaEmbeddingFunction)


def _client_for_url(url: str, settings: ChromaSettings) -> Any:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"a chroma server URL looks like http://host:port, got {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UserError(f"a chroma server URL has no path or query, got {url!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 8000)
    except ValueError as error:
        raise UserError(f"bad port in chroma server URL {url!r}") from error
    try:
        return chromadb.HttpClient(host=parts.hostname, port=port, ssl=parts.scheme == "https", settings=settings)
    except Exception as error:  # chromadb raises plain ValueError/ConnectError types that vary by version
        raise OperatorError(
            f"cannot reach the chroma server at {url}: {error}",
            hint="start one with `chroma run --path DIR --host 127.0.0.1 --port PORT`, or unset HABITLOOP_CHROMA_URL",
        ) from error


def _where(
    *,
    status: OutcomeStatus | None = None,
    skill: str | None = None,
    consolidated: bool | None = None,
    instance: InstanceFilter = ALL_INSTANCES,
) -> dict[str, Any] | None:
    """A chroma `where` clause. Values are passed as data (never parsed), so a hostile instance string is harmless."""
    clauses: list[dict[str, Any]] = []
    if status is not None:
        clauses.append({"status": {"$eq": status}})
    if consolidated is not None:
        clauses.append({"consolidated": {"$eq": consolidated}})
    if instance is not ALL_INSTANCES:
        clauses.append({"instance": {"$eq": instance or ""}})
    if skill is not None:
        clauses.append({"skills": {"$contains": skill}})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _metadata(trajectory: Trajectory) -> dict[str, Any]:
    summary = EpisodeSummary.of(trajectory)
    metadata: dict[str, Any] = {
        "format": FORMAT,
        "status": summary.status,
        "consolidated": summary.consolidated,
        "instance": summary.instance or "",
        "created_at": summary.created_at,
        "trajectory": trajectory.model_dump_json(),
    }
    if summary.skills:  # chroma refuses empty lists
        metadata["skills"] = list(summary.skills)
    return metadata


def _summary(id: str, metadata: Any) -> EpisodeSummary:
    try:
        skills = metadata.get("skills") or ()
        return EpisodeSummary(
            id=id,
            status=metadata["status"],
            consolidated=bool(metadata["consolidated"]),
            instance=metadata["instance"] or None,
            created_at=float(metadata["created_at"]),
            skills=tuple(skills),
        )
    except (KeyError, TypeError, AttributeError) as error:
        raise OperatorError(f"episode {id!r} in the chroma buffer has malformed metadata: {error}") from error


def _summaries(found: Any) -> dict[str, EpisodeSummary]:
    return {i: _summary(i, m) for i, m in zip(found["ids"], found["metadatas"] or [], strict=True)}


def _trajectory(id: str, metadata: Any) -> Trajectory:
    try:
        return Trajectory.model_validate_json(metadata["trajectory"])
    except (KeyError, TypeError, ValidationError) as error:
        raise OperatorError(
            f"episode {id!r} in the chroma buffer holds no readable trajectory: {error}",
            hint=f"discard it: habitloop buffer discard {id}",
        ) from error


def _operator_errors(
    method: Callable[Concatenate[ChromaBuffer, _P], _R],
) -> Callable[Concatenate[ChromaBuffer, _P], _R]:
    """Turn chroma's `InternalError` into an `OperatorError` that says what to do.

    The usual cause, embedded: two processes with a `PersistentClient` on one folder. Each keeps its own in-memory
    index, so one that did not write an episode cannot find it ("Error finding id") once the other's writes reach
    the files. Embedded chroma supports one process; several need a chroma server."""

    @functools.wraps(method)
    def wrapper(self: ChromaBuffer, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except InternalError as error:
            raise self._internal_error(error) from error

    return wrapper


class ChromaBuffer(EpisodeBuffer):
    """Episodes in a chromadb collection, persisted on disk (`path`) or on a chroma server (`url`).

    Give exactly one of `path` (embedded `PersistentClient`, e.g. `$HABITLOOP_HOME/buffer`) and `url`
    (`HttpClient`, e.g. "http://127.0.0.1:8000"; https for TLS). `embedder` defaults to the packaged
    all-MiniLM-L6-v2 (loaded at the first embed); a collection must always be opened with the embedder it was built
    with. Telemetry is off.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        url: str | None = None,
        collection: str = "episodes",
        embedder: TextEmbedder | None = None,
    ) -> None:
        if (path is None) == (url is None):
            raise UserError("ChromaBuffer needs exactly one of path= (embedded store) or url= (chroma server)")
        self.embedder: TextEmbedder = embedder if embedder is not None else Embedder()
        self.location = str(url) if url is not None else str(Path(path).expanduser())  # type: ignore[arg-type]
        self._url = url
        settings = ChromaSettings(anonymized_telemetry=False)
        if url is not None:
            self._client = _client_for_url(url, settings)
        else:
            folder = Path(self.location)
            try:
                folder.mkdir(parents=True, exist_ok=True)
                self._client = chromadb.PersistentClient(path=str(folder), settings=settings)
            except (OSError, ValueError, ChromaError) as error:
                raise OperatorError(f"cannot open the chroma buffer at {folder}: {error}") from error
        self._function = ChromaEmbeddingFunction(self.embedder)
        try:
            self._collection = self._client.get_or_create_collection(
                collection,
                embedding_function=self._function,
                configuration={"hnsw": {"space": "cosine", **_HNSW_LOG}},
            )
        except (ValueError, InvalidArgumentError) as error:  # a bad collection name, another embedding function
            self.close()
            raise UserError(f"cannot open the chroma collection {collection!r} at {self.location}: {error}") from error
        self._check_embedder(collection)

    def _check_embedder(self, collection: str) -> None:
        stored = (self._collection.configuration_json or {}).get("embedding_function") or {}
        if stored.get("name") == _EF_NAME:
            built_with = (stored.get("config") or {}).get("name")
            if built_with != self.embedder.name:
                self.close()
                raise UserError(
                    f"the collection {collection!r} at {self.location} was embedded with {built_with!r}, "
                    f"not {self.embedder.name!r}",
                    hint="open it with the same embedder, or use another collection name",
                )

    # --- writes -------------------------------------------------------------------------------------------------

    @_operator_errors
    def add_many(self, trajectories: Sequence[Trajectory]) -> None:
        for trajectory in trajectories:
            check_trajectory(trajectory)
        latest = list({t.id: t for t in trajectories}.values())  # chroma refuses one id twice in a batch
        step = max(1, self._client.get_max_batch_size())
        for start in range(0, len(latest), step):
            batch = latest[start : start + step]
            self._collection.upsert(
                ids=[t.id for t in batch],
                documents=[t.task for t in batch],
                metadatas=[_metadata(t) for t in batch],
            )

    @_operator_errors
    def mark_consolidated(self, ids: Sequence[str], into: str) -> None:
        check_consolidated_into(into)
        wanted = check_ids(ids)
        if not wanted:
            return
        found = self._collection.get(ids=wanted, include=["metadatas"])
        by_id = dict(zip(found["ids"], found["metadatas"] or [], strict=True))
        missing = [i for i in wanted if i not in by_id]
        if missing:
            raise EpisodeNotFoundError(f"no episodes {missing!r} in the buffer; nothing was marked")
        updated = [_trajectory(i, by_id[i]).model_copy(update={"consolidated_into": into}) for i in wanted]
        # `update` merges metadata keys and leaves the stored embedding alone: nothing is re-embedded.
        self._collection.update(ids=wanted, metadatas=[_metadata(t) for t in updated])

    @_operator_errors
    def discard(self, ids: Sequence[str]) -> builtins.list[str]:
        wanted = check_ids(ids)
        if not wanted:
            return []
        present = set(self._collection.get(ids=wanted, include=[])["ids"])
        gone = [i for i in wanted if i in present]
        if gone:
            self._collection.delete(ids=gone)
        return gone

    # --- reads --------------------------------------------------------------------------------------------------

    @_operator_errors
    def get(self, id: str) -> Trajectory:
        found = self._collection.get(ids=[id], include=["metadatas"])
        if not found["ids"]:
            raise EpisodeNotFoundError(f"no episode {id!r} in the buffer")
        return _trajectory(id, (found["metadatas"] or [{}])[0])

    @_operator_errors
    def list(
        self,
        *,
        status: OutcomeStatus | None = None,
        skill: str | None = None,
        consolidated: bool | None = None,
        instance: InstanceFilter = ALL_INSTANCES,
        limit: int | None = None,
    ) -> builtins.list[Trajectory]:
        check_limit(limit)
        where = _where(status=status, skill=skill, consolidated=consolidated, instance=instance)
        found = self._collection.get(where=where, include=["metadatas"])
        metadatas = dict(zip(found["ids"], found["metadatas"] or [], strict=True))
        ordered = newest_first(_summary(i, m) for i, m in metadatas.items())[:limit]
        return [_trajectory(s.id, metadatas[s.id]) for s in ordered]  # parse only what is returned

    @_operator_errors
    def search(
        self,
        text: str,
        *,
        k: int = 3,
        status: OutcomeStatus | None = "success",
        consolidated: bool | None = False,
        skill: str | None = None,
        instance: InstanceFilter = ALL_INSTANCES,
    ) -> builtins.list[tuple[Trajectory, float]]:
        check_k(k)
        where = _where(status=status, skill=skill, consolidated=consolidated, instance=instance)
        found = self._collection.query(query_texts=[text], n_results=k, where=where, include=["metadatas", "distances"])
        ids = found["ids"][0]
        metadatas = (found["metadatas"] or [[]])[0]
        distances = (found["distances"] or [[]])[0]
        return [
            (_trajectory(i, m), similarity_score(1.0 - float(d)))
            for i, m, d in zip(ids, metadatas, distances, strict=True)
        ]

    @_operator_errors
    def catalog(self, *, instance: InstanceFilter = ALL_INSTANCES) -> builtins.list[EpisodeSummary]:
        found = self._collection.get(where=_where(instance=instance), include=["metadatas"])
        return list(_summaries(found).values())

    @_operator_errors
    def enforce_capacity(
        self, max_unconsolidated: int | None, max_age_days: float | None, *, now: datetime | None = None
    ) -> builtins.list[str]:
        """Same plan as every backend (`plan_evictions`), but without reading every trajectory.

        The agent calls this after every run, and a full catalog carries every episode's JSON (megabytes over HTTP
        once the buffer holds thousands). So: read in full only the episodes that may go (too old and droppable;
        every unconsolidated droppable one when, and only when, the buffer is over the cap), and stand in for
        the rest of the unconsolidated episodes, which only count, by ids alone.
        """
        check_capacity(max_unconsolidated, max_age_days)
        cutoff = age_cutoff(max_age_days, now)
        # not `awaits_consolidation`: consolidated, failed, or unknown without an instance
        shared_unknown = {"$and": [{"status": {"$eq": "unknown"}}, {"instance": {"$eq": ""}}]}
        droppable = {"$or": [{"consolidated": {"$eq": True}}, {"status": {"$eq": "failure"}}, shared_unknown]}
        candidates: dict[str, EpisodeSummary] = {}
        if max_age_days is not None:
            aged = self._collection.get(
                where={"$and": [{"created_at": {"$lt": cutoff}}, droppable]}, include=["metadatas"]
            )
            candidates.update(_summaries(aged))
        if max_unconsolidated is not None:
            pending = self._collection.get(where={"consolidated": {"$eq": False}}, include=[])["ids"]
            if len([i for i in pending if i not in candidates]) > max_unconsolidated:
                failed = self._collection.get(
                    where={"$and": [{"consolidated": {"$eq": False}}, droppable]},
                    include=["metadatas"],
                )
                candidates.update(_summaries(failed))
            # The other unconsolidated episodes only count toward the cap: stand-ins that are never dropped.
            for i in pending:
                if i not in candidates:
                    candidates[i] = EpisodeSummary(i, "success", consolidated=False, instance=None, created_at=0.0)
        plan = plan_evictions(candidates.values(), max_unconsolidated, max_age_days, now=now)
        if plan:
            self.discard(plan)
        return plan

    @_operator_errors
    def __len__(self) -> int:
        return int(self._collection.count())

    # --- lifecycle ----------------------------------------------------------------------------------------------

    def _internal_error(self, error: InternalError) -> OperatorError:
        if self._url is not None:
            return OperatorError(
                f"the chroma server at {self.location} failed: {error}", hint="see the chroma server's log"
            )
        return OperatorError(
            f"the embedded chroma buffer at {self.location} failed: {error}",
            hint="another process is probably using the same folder; embedded chroma supports one process: run a "
            "chroma server (`chroma run --path DIR --port 8001`) and set HABITLOOP_CHROMA_URL=http://127.0.0.1:8001 "
            "in every process (README: Chroma server mode)",
        )

    def close(self) -> None:
        """Release this buffer's hold on the chroma system (the SQLite files, or the HTTP connection pool)."""
        client = getattr(self, "_client", None)
        if client is None:
            return
        self._client = None
        admin = getattr(client, "_admin_client", None)
        servers = [getattr(client, "_server", None), getattr(admin, "_server", None)]
        client.close()
        # chromadb 1.5 leaves an HTTP client's httpx sessions open when it closes (ResourceWarning: unclosed socket).
        # Every HttpClient (and its admin client) gets a system of its own, so these sessions are ours to close.
        for server in servers:
            session = getattr(server, "_session", None)
            if session is not None:
                session.close()

    def __repr__(self) -> str:
        return f"ChromaBuffer({self.location!r}, collection={self._collection.name!r}, embedder={self.embedder!r})"
