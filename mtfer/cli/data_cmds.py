"""`mtfer inspect` and `mtfer prepare`: what a data set holds, and its faces aligned into the cache."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mtfer.datasets.base import DatasetSpec


def data_args(p: argparse.ArgumentParser) -> None:
    from mtfer.core.tasks import FORMATS

    p.add_argument("--format", required=True, choices=FORMATS, help="data set layout")
    p.add_argument("--data", required=True, help="data set folder (or CSV file for fer2013-csv)")


def cmd_inspect(args: argparse.Namespace) -> int:
    from mtfer.datasets import format_summary, read_dataset, summarize

    df, report = read_dataset(args.format, args.data)
    summary = summarize(df, report)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from mtfer.cli.progress import TextProgress
    from mtfer.core.preprocess import PreprocessConfig
    from mtfer.datasets.cache import prepare

    prepared = prepare(
        args.format,
        args.data,
        config=PreprocessConfig(size=args.size),
        workers=args.workers,
        progress=TextProgress(),
        limit=args.limit,
        rebuild=args.rebuild,
        splits=args.split,
    )
    print(f"{prepared.name}: {len(prepared.images)} faces prepared")
    print(json.dumps(prepared.report, indent=2, default=str))
    return 0


def parse_datasets(items: list[str]) -> list[DatasetSpec]:
    out = []
    for item in items:
        fmt, sep, root = item.partition("=")
        if not sep or not root:
            raise ValueError(f"--dataset takes FORMAT=DIR (e.g. fer2013=../shared/data/fer2013), got {item!r}")
        out.append({"format": fmt, "root": str(Path(root).resolve())})
    return out
