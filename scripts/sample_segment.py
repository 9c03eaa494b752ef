"""The bundled sample segment: generate it (deterministically) and upload it to a container.

``python -m scripts.sample_segment`` rewrites ``samples/customer-insights/``;
``python -m scripts.sample_segment --check`` fails when the committed files are out of date.

Layout, as Customer Insights writes an export to Blob Storage (segment-blob-format.md)::

    model.json                                  partition locations are templates:
                                                "{container_url}/{folder}/HighValueSegment/..."
    HighValueSegment/2024/06/03/0500/HighValueSegment_<1..3>.csv   no header, every field quoted

12,000 records (4,000 per partition), columns CustomerId, EmailAddress, FirstName, LastName,
Telephone, LoyaltyTier, Score. Deliberate defects, so a run shows its rejection paths (the
customer ids of each kind are in :func:`defects`):

* ``empty_email`` (40): EmailAddress is empty -> rejected.
* ``malformed_email`` (60): no '@', two '@', no domain, spaces inside, ... -> rejected.
* ``case_duplicate`` (30): repeats an earlier record's email in other letter case -> one contact.
* ``ragged`` (1): 5 fields instead of 7 -> rejected by the reader.
* ``needs_normalizing`` (60): upper-case and/or padded with spaces, valid once normalised.
* ``multiline`` (1): LastName holds a comma, a quote and a line break, valid.

So 131 records (1.1 %) cannot become contacts of their own, and 11,869 distinct contacts remain.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import ContainerClient

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "samples" / "customer-insights"
SEGMENT = "HighValueSegment"
TIME_FOLDER = "2024/06/03/0500"
COLUMNS = ("CustomerId", "EmailAddress", "FirstName", "LastName", "Telephone", "LoyaltyTier", "Score")
PROFILES = 12_000
PARTITIONS = 3
SEED = 20240603
# Placeholders in model.json locations, filled by upload_sample() with where the sample lands.
CONTAINER_URL = "{container_url}"
FOLDER = "{folder}"

DEFECT_COUNTS = {
    "empty_email": 40,
    "malformed_email": 60,
    "case_duplicate": 30,
    "ragged": 1,
    "needs_normalizing": 60,
    "multiline": 1,
}
MULTILINE_LAST_NAME = 'O\'Brien, "Jr."\nof Cork'

_FIRST = (
    "Anna", "Ben", "Chloé", "David", "Emma", "Felix", "Grace", "Hugo", "Isla", "Jonas", "Kira", "Liam",
    "Maya", "Noah", "Olivia", "Paul", "Quinn", "Rosa", "Sven", "Tara", "Umar", "Vera", "Wen", "Zoë",
)  # fmt: skip
_LAST = (
    "Smith", "Müller", "García", "Rossi", "Dubois", "Nowak", "Jensen", "Silva", "Kowalski", "Brown",
    "Novák", "Fischer", "Moreau", "Lindqvist", "Santos", "Kim", "Nguyen", "Okafor", "Tanaka", "Walsh",
)  # fmt: skip
_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com", "contoso.example")
_TIERS = ("Bronze", "Silver", "Gold", "Platinum")
_MALFORMED = (
    "{local}",
    "{local}@",
    "@{domain}",
    "{local}@@{domain}",
    "{local}@{domain}@{domain}",
    "{local} x@{domain}",
    "{local}@{domain}.",
    "{local}@-{domain}",
    "{local}..x@{domain}",
    "{local}@localhost",
)


def _records() -> tuple[list[list[str]], dict[str, list[str]]]:
    rnd = random.Random(SEED)
    records: list[list[str]] = []
    for i in range(1, PROFILES + 1):
        first, last = rnd.choice(_FIRST), rnd.choice(_LAST)
        local = f"{_ascii(first)}.{_ascii(last)}{i}".lower()
        phone = "" if rnd.random() < 0.15 else f"+1-555-{rnd.randrange(100, 1000)}-{rnd.randrange(10000):04d}"
        score = f"{rnd.uniform(50, 100):.1f}"
        records.append(
            [f"CI{i:06d}", f"{local}@{rnd.choice(_DOMAINS)}", first, last, phone, rnd.choice(_TIERS), score]
        )

    # Defects go on distinct records; duplicates copy an email from an earlier, untouched record.
    picked = rnd.sample(range(1, PROFILES), sum(DEFECT_COUNTS.values()))
    kinds: dict[str, list[int]] = {}
    for kind, count in DEFECT_COUNTS.items():
        kinds[kind], picked = sorted(picked[:count]), picked[count:]
    touched = {i for indices in kinds.values() for i in indices}
    for n, i in enumerate(kinds["empty_email"]):
        records[i][1] = "" if n % 2 else "  "
    for n, i in enumerate(kinds["malformed_email"]):
        local, domain = records[i][1].split("@")
        records[i][1] = _MALFORMED[n % len(_MALFORMED)].format(local=local, domain=domain)
    for i in kinds["case_duplicate"]:
        source = rnd.choice([j for j in range(i) if j not in touched])
        local, domain = records[source][1].split("@")
        records[i][1] = f"{local.capitalize()}@{domain.upper()}"
    for n, i in enumerate(kinds["needs_normalizing"]):
        email = records[i][1]
        records[i][1] = (email.upper(), f"  {email} ", f"\t{email.title()}")[n % 3]
    for i in kinds["ragged"]:
        records[i] = records[i][:4] + records[i][5:6]
    for i in kinds["multiline"]:
        records[i][3] = MULTILINE_LAST_NAME
    return records, {kind: [records[i][0] for i in indices] for kind, indices in kinds.items()}


def _ascii(name: str) -> str:
    return name.translate(str.maketrans("éëüáčíó", "eeuacio"))


def defects() -> dict[str, list[str]]:
    """Customer ids of the deliberately bad (or tricky) records, by kind."""
    return _records()[1]


def partition_path(n: int) -> str:
    """Path of partition `n` relative to the export folder."""
    return f"{SEGMENT}/{TIME_FOLDER}/{SEGMENT}_{n}.csv"


def generate() -> dict[str, bytes]:
    """Every file of the sample, by path relative to the sample directory."""
    records, _ = _records()
    size = len(records) // PARTITIONS
    files: dict[str, bytes] = {}
    for n in range(1, PARTITIONS + 1):
        out = io.StringIO()
        # csvStyle QuoteAlways in model.json: Customer Insights quotes every field.
        csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\r\n").writerows(
            records[(n - 1) * size : n * size]
        )
        files[partition_path(n)] = out.getvalue().encode("utf-8")
    files["model.json"] = _model_json().encode("utf-8")
    return files


def _model_json() -> str:
    settings = {
        "$type": "CsvFormatSettings",
        "columnHeaders": False,
        "delimiter": ",",
        "quoteStyle": "QuoteStyle.Csv",
        "csvStyle": "CsvStyle.QuoteAlways",
        "encoding": "UTF-8",
    }
    entity = {
        "$type": "LocalEntity",
        "name": SEGMENT,
        "description": "Sample segment: high-value customers (generated by scripts/sample_segment.py)",
        "attributes": [{"name": c, "dataType": "double" if c == "Score" else "string"} for c in COLUMNS],
        "partitions": [
            {
                "name": f"{SEGMENT}_{n}",
                "location": f"{CONTAINER_URL}/{FOLDER}/{partition_path(n)}",
                "fileFormatSettings": settings,
            }
            for n in range(1, PARTITIONS + 1)
        ],
    }
    model = {
        "name": "CustomerInsights",
        "version": "1.0",
        "modifiedTime": "2024-06-03T05:14:09Z",
        "entities": [entity],
    }
    return json.dumps(model, indent=2, ensure_ascii=False) + "\n"


def _sample_files(sample_dir: Path) -> Iterator[Path]:
    # Data first, model.json last: as in Customer Insights, model.json marks a complete export.
    files = sorted(p for p in sample_dir.rglob("*") if p.is_file() and p.name != "model.json")
    yield from files
    if (sample_dir / "model.json").is_file():
        yield sample_dir / "model.json"


def upload_sample(container_client: ContainerClient, sample_dir: Path, folder: str) -> list[str]:
    """Upload `sample_dir` under `folder` of the container (created if missing); the blob names.

    model.json's ``{container_url}`` and ``{folder}`` placeholders are filled with this container's
    URL (Azurite's or Azure's) and `folder`, so its partition locations point at the uploaded files.
    """
    folder = folder.strip("/")
    if not (sample_dir / "model.json").is_file():
        raise FileNotFoundError(
            f"{sample_dir} has no model.json: generate it with `python -m scripts.sample_segment`"
        )
    with contextlib.suppress(ResourceExistsError):
        container_client.create_container()
    uploaded: list[str] = []
    for path in _sample_files(sample_dir):
        data = path.read_bytes()
        if path.name == "model.json":
            text = data.decode("utf-8").replace(CONTAINER_URL, container_client.url.rstrip("/"))
            data = text.replace(FOLDER, quote(folder, safe="/")).encode("utf-8")
        name = f"{folder}/{path.relative_to(sample_dir).as_posix()}"
        container_client.upload_blob(name, data, overwrite=True)
        uploaded.append(name)
    return uploaded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=SAMPLE_DIR, help="sample directory (default: %(default)s)"
    )
    parser.add_argument("--check", action="store_true", help="only verify the files are up to date")
    args = parser.parse_args(argv)
    files = generate()
    stale = [
        p for p, data in files.items() if not (args.out / p).is_file() or (args.out / p).read_bytes() != data
    ]
    if args.check:
        for path in stale:
            print(
                f"{args.out / path} is out of date: run `python -m scripts.sample_segment`", file=sys.stderr
            )
        return 1 if stale else 0
    for path, data in files.items():
        (args.out / path).parent.mkdir(parents=True, exist_ok=True)
        (args.out / path).write_bytes(data)
    print(f"wrote {len(files)} files ({sum(map(len, files.values()))} bytes) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
