"""Read a CDM manifest folder's description of one table: its columns and where its CSV files are.

Finance and operations' "Export to Data Lake", Business Central's bc2adls, Customer Insights' "Common
Data Model tables" and the CDM SDK describe a folder with `*.manifest.cdm.json` (which may list
sub-manifests) and one `<Entity>.cdm.json` definition per table instead of model.json. Definitions
are resolved by Microsoft's CDM object model (`commondatamodel-objectmodel`): `extendsEntity`,
attribute groups, imports and the standard CDM foundations it ships (`cdm:/foundations.cdm.json`)
are its job, offline. It is imported here only when a folder has a manifest (about 0.4 s and a few
MB; measured in docs/configuration.md), so model.json folders and the function app never load it.

The object model reads documents only through `_FolderAdapter`, which maps corpus paths (relative,
`adls:/...`, `local:/...`) to blobs under the configured folder and refuses anything else, so a
manifest cannot make the app read outside the folder. Data files are never read here: this module
returns blob names and CSV settings, the segment reader streams them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.cdm_types import temporal_type
from shared.errors import TerminalError

__all__ = [
    "FOLDER_NAMESPACES",
    "MANIFEST_SUFFIX",
    "ROOT_MANIFEST",
    "CsvTraits",
    "FileRef",
    "ManifestError",
    "ManifestTable",
    "PatternRef",
    "folder_path",
    "matching",
    "read_table",
    "root_manifest",
    "shown",
]

MANIFEST_SUFFIX = ".manifest.cdm.json"
ROOT_MANIFEST = "default.manifest.cdm.json"
# Namespaces a manifest may use for documents and files of its own folder. "cdm" is the object
# model's own offline corpus of standard documents.
_FOLDER = "folder"
FOLDER_NAMESPACES = (_FOLDER, "adls", "local")
_CSV_TRAIT = "is.partition.format.CSV"
_MAX_MANIFESTS = 1000  # sub-manifests followed at most (a loop or a huge tree is not a segment export)
_REGEX_TIMEOUT = 1.0  # seconds per file name, as the object model itself allows a pattern


class ManifestError(TerminalError):
    """The manifest folder cannot be read as configured; the message says what is wrong."""

    code = "SegmentUnreadable"


@dataclass(frozen=True)
class CsvTraits:
    """The `is.partition.format.CSV` trait's arguments, as this reader honours them (raw strings)."""

    column_headers: str = "false"
    delimiter: str = ","
    encoding: str = "UTF-8"
    quote_style: str = "QuoteStyle.Csv"
    csv_style: str = "CsvStyle.QuoteAlways"
    quote: str = '"'
    escape: str = '"'
    ragged_right: str = "false"


@dataclass(frozen=True)
class FileRef:
    """A data partition: a location as the manifest resolves it (a folder path or a URL)."""

    location: str
    traits: CsvTraits
    refresh_time: str | None = None


@dataclass(frozen=True)
class PatternRef:
    """A data partition pattern: files under `root` (a folder path) whose path relative to it, with
    a leading '/', fully matches `regex` (a glob pattern already turned into one)."""

    root: str
    regex: str
    described: str  # "globPattern '/*.csv'", for messages
    traits: CsvTraits


@dataclass(frozen=True)
class ManifestTable:
    manifest: str  # folder path of the manifest that declares the table
    definition: str  # corpus path of its entity definition
    columns: tuple[str, ...]
    types: dict[str, str] = field(default_factory=dict)  # column -> date / dateTime / dateTimeOffset
    files: tuple[FileRef, ...] = ()
    patterns: tuple[PatternRef, ...] = ()


def root_manifest(names: Sequence[str]) -> str | None:
    """Which of a folder's file names is its root manifest: `default.manifest.cdm.json`, else the only
    `*.manifest.cdm.json`; None without one. Several and no default raise ManifestError."""
    manifests = sorted(n for n in names if n.endswith(MANIFEST_SUFFIX))
    if not manifests:
        return None
    if ROOT_MANIFEST in manifests:
        return ROOT_MANIFEST
    if len(manifests) == 1:
        return manifests[0]
    raise ManifestError(
        f"the folder holds {len(manifests)} manifests ({', '.join(manifests[:5])}) and no "
        f"{ROOT_MANIFEST}: point the export's folder at the one whose manifest lists the table"
    )


def folder_path(corpus_path: str, where: str) -> str:
    """The path inside the configured folder that a corpus path of the folder's namespaces names."""
    namespace, sep, path = corpus_path.partition(":")
    if not sep or namespace not in FOLDER_NAMESPACES:
        raise ManifestError(
            f"{where}: {corpus_path!r} is outside the configured folder and was not followed "
            f"(only relative paths and {', '.join(n + ':/' for n in FOLDER_NAMESPACES[1:])} paths name "
            "documents and files of the folder)"
        )
    parts = path.split("/")
    if path.startswith("//") or "\\" in path or any(p in (".", "..") for p in parts):
        raise ManifestError(f"{where}: {corpus_path!r} has '.', '..' or '\\' segments and was not followed")
    return "/".join(p for p in parts if p)


def _adapter_class() -> type[Any]:
    from cdm.storage import StorageAdapterBase  # heavy: only for manifest folders

    class _FolderAdapter(StorageAdapterBase):  # type: ignore[misc]
        """The object model's only way to documents: blobs of the configured folder, read-only."""

        def __init__(self, read: Callable[[str], bytes]) -> None:
            super().__init__()
            self._read = read
            # Why the last read failed, in our words: the object model logs and returns None instead.
            self.refused: list[str] = []

        def can_read(self) -> bool:
            return True

        def can_write(self) -> bool:
            return False

        async def read_async(self, corpus_path: str) -> str:
            try:
                path = folder_path(f"{_FOLDER}:{corpus_path}", "a manifest")
                return self._read(path).decode("utf-8-sig")
            except TerminalError as exc:
                self.refused.append(str(exc))
                raise

        def create_adapter_path(self, corpus_path: str) -> str:
            return corpus_path

        def create_corpus_path(self, adapter_path: str) -> str | None:
            return adapter_path

        async def compute_last_modified_time_async(self, corpus_path: str) -> None:
            return None

        async def fetch_file_metadata_async(self, corpus_path: str) -> None:
            return None

    return _FolderAdapter


def read_table(read: Callable[[str], bytes], manifest: str, table: str) -> ManifestTable:
    """Find `table` through the manifest at folder path `manifest` (and its sub-manifests) and
    resolve its definition. `read(path)` returns a document of the folder (ManifestError or the
    reader's SegmentError when it cannot)."""
    return asyncio.run(_read_table(read, manifest, table))


async def _read_table(read: Callable[[str], bytes], manifest_path: str, table: str) -> ManifestTable:
    from cdm.enums import CdmStatusLevel
    from cdm.objectmodel import CdmCorpusDefinition

    corpus = CdmCorpusDefinition()
    problems: list[str] = []
    corpus.set_event_callback(lambda _level, message: problems.append(str(message)), CdmStatusLevel.ERROR)
    adapter = _adapter_class()(read)
    for namespace in FOLDER_NAMESPACES:
        corpus.storage.mount(namespace, adapter)
    corpus.storage.default_namespace = _FOLDER

    async def fetch(corpus_path: str, what: str) -> Any:
        problems.clear()
        adapter.refused.clear()
        try:
            found = await corpus.fetch_object_async(corpus_path)
        except TerminalError:
            raise
        except Exception as exc:  # the object model raises what its parsers raise
            raise ManifestError(
                f"{shown(corpus_path)}: the {what} cannot be read ({type(exc).__name__})"
            ) from None
        if found is None and adapter.refused:
            raise ManifestError(f"the {what} {shown(corpus_path)} cannot be read: {adapter.refused[-1]}")
        if found is None:
            detail = f": {_first(problems)}" if problems else ""
            raise ManifestError(f"{shown(corpus_path)}: the {what} cannot be read as a CDM document{detail}")
        return found

    queue = [await fetch(f"{_FOLDER}:/{manifest_path}", "manifest")]
    names: list[str] = []
    seen = 0
    while queue:
        manifest = queue.pop(0)
        seen += 1
        if seen > _MAX_MANIFESTS:
            raise ManifestError(f"{manifest_path} leads to more than {_MAX_MANIFESTS} sub-manifests")
        for declared in manifest.entities:
            if declared.entity_name != table:
                names.append(declared.entity_name)
                continue
            return await _table(corpus, fetch, manifest, declared, problems)
        for sub in manifest.sub_manifests:
            path = corpus.storage.create_absolute_corpus_path(sub.definition, manifest)
            folder_path(path or str(sub.definition), shown(manifest.at_corpus_path))
            queue.append(await fetch(path, "sub-manifest"))
    listed = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
    raise ManifestError(
        f"{manifest_path} and its sub-manifests declare no table named {table!r} (they declare: "
        f"{listed or 'none'}); set the segment name to the table's entityName"
    )


def shown(corpus_path: str) -> str:
    """A corpus path of the folder as messages show it: relative to the configured folder."""
    return corpus_path.removeprefix(f"{_FOLDER}:/")


def _first(problems: Sequence[str]) -> str:
    return problems[0][:300]


async def _table(corpus: Any, fetch: Any, manifest: Any, declared: Any, problems: list[str]) -> ManifestTable:
    from cdm.objectmodel import CdmLocalEntityDeclarationDefinition

    where = shown(manifest.at_corpus_path)
    name = declared.entity_name
    if not isinstance(declared, CdmLocalEntityDeclarationDefinition):
        raise ManifestError(
            f"{where}: table {name!r} is a referenced entity: its data lives with another manifest. "
            "Point the export at the folder of the manifest that holds its data"
        )
    definition = corpus.storage.create_absolute_corpus_path(declared.entity_path, manifest)
    folder_path((definition or "").split(".cdm.json/")[0] + ".cdm.json", where)
    entity = await fetch(definition, "entity definition")
    problems.clear()
    resolved = await entity.create_resolved_entity_async(f"{name}__resolved")
    if resolved is None or problems:
        detail = _first(problems) if problems else "the object model could not resolve it"
        raise ManifestError(
            f"{shown(definition)}: the definition of {name!r} cannot be resolved offline ({detail}); it may "
            "only import documents of the folder and the CDM foundations (cdm:/foundations.cdm.json)"
        )
    columns: list[str] = []
    types: dict[str, str] = {}
    for attribute in _attributes(resolved.attributes):
        columns.append(attribute.name)
        kind = temporal_type(getattr(attribute.data_format, "name", None))
        if kind is not None:
            types[attribute.name] = kind
    if not columns:
        raise ManifestError(f"{shown(definition)}: table {name!r} has no attributes (columns)")
    if len(set(columns)) != len(columns):
        raise ManifestError(f"{shown(definition)}: table {name!r} repeats a column name")
    files = tuple(
        FileRef(
            _absolute(corpus, manifest, p.location, where),
            _traits(p.exhibits_traits, where),
            p.refresh_time.isoformat() if p.refresh_time else None,
        )
        for p in declared.data_partitions
    )
    patterns = tuple(_pattern(corpus, manifest, p, where) for p in declared.data_partition_patterns)
    return ManifestTable(where, definition, tuple(columns), types, files, patterns)


def _absolute(corpus: Any, manifest: Any, location: object, where: str) -> str:
    """A partition location as a corpus path (or the URL it is); the object model gives None for a
    path that climbs above its namespace's root."""
    found = (
        corpus.storage.create_absolute_corpus_path(location, manifest) if isinstance(location, str) else None
    )
    if not found:
        raise ManifestError(
            f"{where}: partition location {location!r} does not name a file of the configured folder "
            "and was not followed"
        )
    return str(found)


def _attributes(items: Iterable[Any]) -> Iterable[Any]:
    """Type attributes in order, attribute groups flattened."""
    from cdm.objectmodel import CdmAttributeGroupReference

    for item in items:
        if isinstance(item, CdmAttributeGroupReference):
            yield from _attributes(item.explicit_reference.members)
        else:
            yield item


def _pattern(corpus: Any, manifest: Any, pattern: Any, where: str) -> PatternRef:
    root = (pattern.root_location or "").rstrip("/")
    root_path = corpus.storage.create_absolute_corpus_path(root, manifest) or f"{_FOLDER}:/"
    glob, expression = (pattern.glob_pattern or "").strip(), (pattern.regular_expression or "").strip()
    if glob:
        regex, described = pattern.glob_pattern_to_regex(glob), f"globPattern {glob!r}"
    elif expression:
        regex, described = expression, f"regularExpression {expression!r}"
    else:
        regex, described = r"[/\\].*", "no pattern (every file)"
    return PatternRef(root_path, regex, described, _traits(pattern.exhibits_traits, where))


def _traits(traits: Iterable[Any], where: str) -> CsvTraits:
    values: dict[str, str] = {}
    for trait in traits or ():
        name = trait.fetch_object_definition_name()
        if name != _CSV_TRAIT:
            if (
                isinstance(name, str)
                and name.startswith("is.partition.format.")
                and "parquet" in name.lower()
            ):
                raise ManifestError(
                    f"{where}: partitions in Parquet ({name}); only CSV partitions can be read"
                )
            continue
        for argument in trait.arguments:
            if isinstance(argument.name, str) and argument.value is not None:
                values[argument.name] = str(argument.value)
    known = {
        "columnHeaders": "column_headers",
        "delimiter": "delimiter",
        "encoding": "encoding",
        "quoteStyle": "quote_style",
        "csvStyle": "csv_style",
        "quote": "quote",
        "escape": "escape",
        "raggedRight": "ragged_right",
    }
    return CsvTraits(**{known[k]: v for k, v in values.items() if k in known})


def matching(pattern: PatternRef, paths: Iterable[str]) -> list[str]:
    """The folder paths among `paths` (under the pattern's root) the pattern selects."""
    import regex as regex_module  # the object model's dependency: match timeouts

    try:
        compiled = regex_module.compile(pattern.regex)
    except regex_module.error as exc:
        raise ManifestError(f"partition pattern {pattern.described} is not a valid pattern ({exc})") from None
    root = folder_path(pattern.root, "a partition pattern")
    prefix = f"{root}/" if root else ""
    chosen = []
    for path in paths:
        if not path.startswith(prefix):
            continue
        relative = "/" + path[len(prefix) :]
        try:
            if compiled.fullmatch(relative, timeout=_REGEX_TIMEOUT):
                chosen.append(path)
        except TimeoutError:
            raise ManifestError(
                f"partition pattern {pattern.described} took more than {_REGEX_TIMEOUT} s on one file "
                "name; simplify it"
            ) from None
    return chosen
