"""``medrobust data build NAME`` and ``medrobust data info NAME``."""

from __future__ import annotations

import argparse
import time

from medrobust.cli._util import parse_options
from medrobust.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="build (cache) and inspect datasets")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    for name, helptext in (("build", "read the published files and cache the arrays"),
                           ("info", "print split sizes, class counts, shape, fs and units")):
        q = dsub.add_parser(name, help=helptext)
        q.add_argument("dataset", help="dataset name, e.g. mitdb")
        q.add_argument("--data-dir", default=None, help="dataset folder or its parent (default: $MEDROBUST_DATA)")
        q.add_argument("--cache-dir", default=None, help="cache folder (default: ~/.cache/medrobust/cache)")
        q.add_argument("--option", action="append", metavar="KEY=VALUE",
                       help="loader option, repeatable (e.g. format=native, scheme=inter)")
        q.set_defaults(func=run)
    p.set_defaults(func=lambda a: p.print_help())


def run(args: argparse.Namespace) -> int:
    from medrobust.data import check_dataset_options, dataset_options, load_dataset

    options = parse_options(args.option)
    if args.cache_dir is not None:
        if "cache_dir" not in dataset_options(args.dataset):
            raise ConfigError(f"--cache-dir: dataset {args.dataset!r} keeps no cache; leave the flag out.")
        options["cache_dir"] = args.cache_dir
    options = check_dataset_options(args.dataset, options)  # before any file is read
    t0 = time.perf_counter()
    for split in ("train", "val", "test"):
        ds = load_dataset(args.dataset, root=args.data_dir, split=split, **options)
        counts = dict(zip(ds.meta.classes, ds.class_counts().tolist()))
        print(f"{split:5s} n={len(ds):7d} shape={ds.input_shape} fs={ds.meta.fs:g} units={ds.meta.units!r} {counts}")
    print(f"{args.dataset}: ready in {time.perf_counter() - t0:.1f} s (fingerprint {ds.meta.fingerprint[:16]}...)")
    return 0
