"""``layerwise-book`` (also ``python -m layerwise.book``): run chapters, build sites, refresh references."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..config import DATA_DIR_ENV, DATA_MIRROR_ENV, LayerwiseError
from .chapters import discover_chapters, parse_overrides, profiles_in
from .paths import NOTEBOOKS_ENV, locate
from .runner import describe_plans, plan_run, refresh_reference, run
from .site import PUBLISHED_PROFILE, build_site, publish


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="layerwise-book", description="The book's runner: execute chapters with "
                                "papermill, build the site with jupyter-book.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--notebooks", default=None,
                        help=f"folder of NN_name.py chapters (default: ${NOTEBOOKS_ENV}, else ./notebooks)")
        sp.add_argument("--profiles-dir", default=None, help="folder of <profile>.yaml (default: NOTEBOOKS/profiles)")
        sp.add_argument("--out", default=None,
                        help="output folder of the profile (default: _build/<profile> beside NOTEBOOKS)")
        sp.add_argument("--no-progress", action="store_true", help="no progress bars")

    r = sub.add_parser("run", help="execute chapters with papermill (skips unchanged ones)")
    r.add_argument("--profile", default="tiny", help="tiny (default), gpu or paper")
    r.add_argument("--chapters", nargs="+", default=None, help="names or NN prefixes; default: all")
    r.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                   help="override a parameter (value parsed as YAML); repeatable")
    r.add_argument("--cache-dir", default=None,
                   help="artefact cache (default: $LAYERWISE_CACHE_DIR, else ~/.cache/layerwise)")
    r.add_argument("--force", action="store_true", help="run even unchanged chapters")
    r.add_argument("--build", action="store_true", help="then build the profile's site")
    r.add_argument("--publish", action="store_true", help="gpu profile only: copy the notebooks to book/chapters/")
    r.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebook's, python3)")
    r.add_argument("--dry-run", action="store_true",
                   help="resolve and type-check chapters, profile and parameters, print what would run; run nothing")
    common(r)

    sw = sub.add_parser("sweep", help="run chapters x models x parameter grids as papermill jobs through submitit "
                        "(SLURM job arrays, or this machine)")
    sw.add_argument("--profile", default="tiny")
    sw.add_argument("--chapters", nargs="+", required=True, help="names or NN prefixes")
    sw.add_argument("--models", nargs="+", default=[], help="one job per model (its chapter run with models=[M])")
    sw.add_argument("-g", "--grid", action="append", default=[], metavar="NAME=[V1, V2]",
                    help="one job per value (YAML list); several -g make a cartesian product")
    sw.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE", help="for every job")
    sw.add_argument("--cache-dir", default=None)
    sw.add_argument("--force", action="store_true", help="run even unchanged chapters")
    sw.add_argument("--kernel", default=None)
    sw.add_argument("--cluster", default="auto", help="auto (SLURM where sbatch exists), slurm, local or debug")
    sw.add_argument("--folder", default=None, help="submitit's logs (default: <out>/sweep/logs)")
    sw.add_argument("--slurm-partition", default=None)
    sw.add_argument("--gpus-per-job", type=int, default=None, help="default: 1 where GPUs exist, else 0")
    sw.add_argument("--timeout-min", type=int, default=240)
    sw.add_argument("--max-parallel", type=int, default=None,
                    help="jobs at a time (local default: one per GPU, else 1; SLURM default: all)")
    sw.add_argument("--dry-run", action="store_true", help="list the jobs (each planned and type-checked); run none")
    common(sw)

    b = sub.add_parser("build", help="build a profile's site with jupyter-book (execution off, -W)")
    b.add_argument("--profile", default="tiny")
    b.add_argument("--published", action="store_true",
                   help="build the published book (book/ with the root _config.yml/_toc.yml) into _build/gpu/html")
    common(b)

    f = sub.add_parser("refresh-reference", help="run the tiny profile and copy its notebooks to tests/notebooks/")
    f.add_argument("--chapters", nargs="+", default=None)
    f.add_argument("--dest", default=None, help="default: tests/notebooks beside NOTEBOOKS")
    common(f)

    ls = sub.add_parser("list", help="list chapters and profiles")
    common(ls)

    c = sub.add_parser("colab", help="write the chapters' Colab notebooks (book/colab/NN_name.ipynb)")
    c.add_argument("--check", action="store_true", help="write nothing; fail if one is missing or out of date")
    c.add_argument("--dest", default=None, help="default: book/colab beside NOTEBOOKS")
    common(c)

    cm = sub.add_parser("commands", help="list every command the docs print (JSON)")
    common(cm)

    d = sub.add_parser("data", help="download (fetch) or verify (check) the benchmark and corpus files that the "
                       "gpu and paper profiles read")
    dsub = d.add_subparsers(dest="data_command", required=True)
    for name, what in (("fetch", "download each missing or corrupt file, verify every file by sha256"),
                       ("check", "verify the files by sha256, download nothing")):
        x = dsub.add_parser(name, help=what)
        x.add_argument("--data-dir", default=None, help=f"where the files go (default: ${DATA_DIR_ENV})")
        x.add_argument("--only", nargs="+", default=None, metavar="NAME",
                       help="file names or groups (benchmarks, corpus); default: every file")
        if name == "fetch":
            x.add_argument("--mirror", default=None, metavar="DIR_OR_URL",
                           help=f"tried first: a folder or URL holding the files by name (default: ${DATA_MIRROR_ENV})")
            x.add_argument("--mirror-only", action="store_true", help="do not try the public URLs")
            x.add_argument("--timeout", type=float, default=60.0, help="seconds per connection (default 60)")
    return p


def _data(args: argparse.Namespace) -> int:
    """``layerwise-book data fetch|check``: one line per file, a closing summary; 1 if any is missing."""
    from ..data.fetch import check_files, fetch_files, summary

    if args.data_command == "fetch":
        statuses = fetch_files(args.data_dir, names=args.only, mirror=args.mirror, public=not args.mirror_only,
                               timeout=args.timeout, echo=lambda line: print(line, flush=True))
    else:
        statuses = check_files(args.data_dir, names=args.only)
        for st in statuses:
            print(st.line())
    ok = all(st.ok for st in statuses)
    print(summary(statuses), file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def _colab(args: argparse.Namespace) -> int:
    """``layerwise-book colab [--check]``: the Colab notebooks, from the chapters and ``_config.yml``."""
    from .colab import COLAB_DIR, repository, stale_colab, write_colab

    layout = locate(args.notebooks)
    dest = args.dest or layout.root / COLAB_DIR
    repo = repository(layout.config)
    if args.check:
        stale = stale_colab(layout.notebooks, dest, repo)
        for p in stale:
            print(f"out of date: {p}", file=sys.stderr)
        if stale:
            print("error: run `layerwise-book colab` and commit book/colab/", file=sys.stderr)
        return 1 if stale else 0
    for p in write_colab(layout.notebooks, dest, repo):
        print(f"wrote {p}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    """``layerwise-book sweep``: plan the jobs, list them, and (unless --dry-run) submit and wait."""
    from ..sweep import SweepSettings, plan_sweep, run_sweep
    from .runner import out_dir_for

    settings = SweepSettings(profile=args.profile, notebooks_dir=args.notebooks, profiles_dir=args.profiles_dir,
                             cache=args.cache_dir, force=args.force, kernel=args.kernel)
    grid = parse_overrides(args.grid)
    jobs = plan_sweep(settings, args.chapters, models=args.models, grid=grid, overrides=parse_overrides(args.param),
                      out=args.out)
    print(f"{len(jobs)} job(s), profile {args.profile}:")
    for job in jobs:
        print(f"  {job.describe()}")
    if args.dry_run:
        return 0
    folder = args.folder or out_dir_for(args.profile, args.out, args.notebooks) / "sweep" / "logs"
    run_sweep(jobs, settings, folder=folder, cluster=args.cluster, slurm_partition=args.slurm_partition,
              gpus_per_job=args.gpus_per_job, timeout_min=args.timeout_min, max_parallel=args.max_parallel)
    print(f"done: {len(jobs)} job(s); logs in {folder}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    progress = not getattr(args, "no_progress", False)  # `data` has no chapters folder and no progress bars
    nb = getattr(args, "notebooks", None)
    try:
        if args.command == "run" and args.dry_run:
            if args.publish and args.profile != PUBLISHED_PROFILE:
                publish(args.profile, out=args.out, notebooks_dir=nb)  # raises: only gpu is published
            plans = plan_run(args.profile, chapters=args.chapters, overrides=parse_overrides(args.param),
                             out=args.out, notebooks_dir=nb, profiles_dir=args.profiles_dir, cache=args.cache_dir)
            print(describe_plans(plans, args.profile, force=args.force, publish=args.publish, build=args.build))
        elif args.command == "run":
            if args.publish and args.profile != PUBLISHED_PROFILE:  # say so before hours of running
                publish(args.profile, out=args.out, notebooks_dir=nb)
            run(args.profile, chapters=args.chapters, overrides=parse_overrides(args.param), out=args.out,
                notebooks_dir=nb, profiles_dir=args.profiles_dir, cache=args.cache_dir,
                force=args.force, kernel=args.kernel, progress=progress)
            if args.publish:
                for p in publish(args.profile, out=args.out, notebooks_dir=nb):
                    print(f"published {p}")
            if args.build:
                print(f"site: {build_site(args.profile, out=args.out, published=args.publish, notebooks_dir=nb)}")
        elif args.command == "build":
            profile = PUBLISHED_PROFILE if args.published else args.profile
            print(f"site: {build_site(profile, out=args.out, published=args.published, notebooks_dir=nb)}")
        elif args.command == "refresh-reference":
            for p in refresh_reference(chapters=args.chapters, dest=args.dest, notebooks_dir=nb,
                                       profiles_dir=args.profiles_dir, out=args.out, progress=progress):
                print(f"reference {p}")
        elif args.command == "sweep":
            return _sweep(args)
        elif args.command == "data":
            return _data(args)
        elif args.command == "colab":
            return _colab(args)
        elif args.command == "commands":
            from .commands import as_json, documented_commands

            print(as_json(documented_commands(locate(nb).root)))
        elif args.command == "list":
            layout = locate(nb)
            print("chapters:", ", ".join(discover_chapters(layout.notebooks)) or "(none)")
            print("profiles:", ", ".join(profiles_in(args.profiles_dir or layout.profiles)) or "(none)")
    except LayerwiseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
