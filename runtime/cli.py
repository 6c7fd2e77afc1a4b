"""`mixsteer`: validate, inspect, plan, compile and diff experiment specs; check what they read; tabulate
and compare their results.

The program (the `mixsteer` script, `python -m runtime.cli`) and the only module that touches the process
environment: it reads argv and the project root (`--root`, default: the current directory) once and passes
them down. The commands that only compile live in `compiler.cli`; those here read sources or results or
run a stage, so the compiler never imports the runtime. Spec problems print as
`file:line:col: path: message` and exit 2, never with a traceback; anything else is a bug and keeps its
traceback.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from compiler.cli import (add_compile, add_diff, add_lock, add_plan, add_schema, add_show, add_validate, stage_status,
                          user_path)
from compiler.errors import MixsteerError, SpecError

EPILOG = """\
examples:
  mixsteer validate specs/*.yaml          check every spec (exit 2 on problems)
  mixsteer check specs/demo.yaml          open every source, check credentials, GPUs and disk (exit 2 on problems)
  mixsteer lock specs/paper.yaml          resolve floating Hub references to commits (specs/paper.lock.json)
  mixsteer show specs/demo.yaml           the fully resolved spec (defaults, extends, one run)
  mixsteer plan specs/demo.yaml           stage instances, their ids and which outputs exist
  mixsteer diff specs/a.yaml specs/b.yaml what B changes vs A and which stages must rerun
  mixsteer results specs/demo.yaml        one tidy table of every finished result (csv, parquet, jsonl)
  mixsteer compare specs/a.yaml specs/b.yaml   B − A per measure, paired intervals (Markdown; --html)
  mixsteer compile specs/demo.yaml        write build/demo/ (stage JSONs, lock.json, rules.smk)
  mixsteer schema > spec.schema.json      JSON Schema for editor completion
  mixsteer scorer-check specs/scorer_check.yaml   scorer vs Perspective (RTP) and human (ToxiGen) labels
then run it:  snakemake --cores all --config spec=specs/demo.yaml
"""


def main(argv: list[str] | None = None) -> int:
    """The exit code of one command. Without `argv` this is the process (the `mixsteer` script,
    `python -m runtime.cli`), and it ends the process itself once the command is done
    (`compiler.shutdown`: no interpreter teardown for native thread pools to abort in)."""
    code = _command(argv)
    if argv is None:
        from compiler.shutdown import exit_process

        exit_process(code)
    return code


def _command(argv: list[str] | None) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `mixsteer plan … | head` ends quietly
    parser = build_parser()
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    try:
        return args.func(args, root)
    except SpecError as exc:
        print(f"{len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''}:", file=sys.stderr)
        print(str(exc), file=sys.stderr)
        return 2
    except MixsteerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mixsteer",
        description="Compile declarative YAML experiment specs (pretraining mixtures, probing, "
                    "steering, post-training, evaluation) into a Snakemake workflow.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--root", default=".", help="project root: results/, build/ and relative data "
                        "paths live here (default: current directory)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (add_validate, add_show, add_check, add_lock, add_plan, add_compile, add_diff, add_results, add_compare,
                add_scorer_check, add_schema):
        add(commands)
    return parser


def add_check(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("check", help="open every source the specs read; check tokens, keys, GPUs and disk; "
                            "print every problem at once", description=CHECK_HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("specs", nargs="+", type=Path, metavar="SPEC")
    p.add_argument("--cluster", action="store_true",
                   help="jobs are submitted to a scheduler: GPUs need not be visible on this machine")
    p.add_argument("--json", action="store_true", help="machine-readable reports")
    p.set_defaults(func=cmd_check)


def add_results(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("results", help="one tidy table of the finished results of specs (a row per run, model "
                            "variant, measure and scorer)", description=RESULTS_HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("specs", nargs="+", type=Path, metavar="SPEC")
    p.add_argument("--format", choices=("csv", "parquet", "jsonl"), default="csv", help="default: csv")
    p.add_argument("-o", "--output", type=Path, help="write the table here (default: standard output)")
    p.set_defaults(func=cmd_results)


def add_compare(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("compare", help="what OTHER changed in the numbers vs BASE: paired differences with "
                            "intervals, per matched run and measure", description=COMPARE_HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base", type=Path, metavar="BASE")
    p.add_argument("others", nargs="+", type=Path, metavar="OTHER")
    p.add_argument("--html", type=Path, metavar="FILE", help="also write the comparison as an HTML page")
    p.add_argument("--csv", type=Path, metavar="FILE", help="also write the long table (one row per pair and measure)")
    p.set_defaults(func=cmd_compare)


def add_scorer_check(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "scorer-check", help="measure toxicity scorers against Perspective's RTP scores and ToxiGen's human "
        "ratings; print the table", description=SCORER_CHECK_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", type=Path, metavar="SPEC", help="a spec with a `scorer_check:` section")
    p.add_argument("--json", action="store_true", help="print agreement.json instead of the table")
    p.set_defaults(func=cmd_scorer_check)


CHECK_HELP = """\
Look at what the spec points to, before any job starts, and print every problem at once, each at
the spec line it comes from (file:line:col: key: message); exit 2 if there is any, else 0.

- Every source of every section (data, probe, evaluate prompt sets, detection and cross-entropy data,
  posttrain, attack, scorer_check): a local file, folder or glob must exist, and its first records
  must hold every field the spec names (text_field, label_field, challenging_field, attribute fields,
  DPO fields, target_field, filter and strata fields); a text field must hold text.
- A Hub dataset must be reachable (with HF_HUB_OFFLINE=1 or no network it cannot be: mirror it and
  write `path:` instead of `name:`), a gated one (ToxiGen) needs HF_TOKEN, and an unpinned `revision`
  is a warning. A classifier scorer's Hub model must be in the local cache or reachable.
- A Perspective scorer needs its key variable ($PERSPECTIVE_API_KEY); texts already in its cache
  score without one.
- GPUs visible here (torch) against the largest resources.*.gpus: none visible is only an info line
  (a login node); fewer than asked is a problem unless --cluster.
- Free disk under the project root against `mixsteer plan`'s estimate for the outputs not yet written.

The workflow runs the local part (local sources and their fields) before its first job.
"""


def cmd_check(args: argparse.Namespace, root: Path) -> int:
    import os
    import shutil

    from huggingface_hub import constants, get_token

    from compiler.plan import build_plan
    from compiler.preflight.check import Machine, Report, preflight
    from compiler.preflight.hub import HfHub, HubAccess
    from compiler.validate import load_spec, warnings_of
    from runtime.sources import SOURCE_READER

    access = HubAccess(offline=constants.HF_HUB_OFFLINE, has_token=get_token() is not None, hub=HfHub())
    machine = Machine(env=os.environ, hub=access, gpu_count=_visible_gpus,
                      disk_free=lambda path: shutil.disk_usage(path).free, local_run=not args.cluster)
    reports = []
    for spec in args.specs:
        try:  # local paths unchecked here: preflight reports a missing one with every other problem
            runs = load_spec(user_path(spec), None, str(spec))
            plan = build_plan(runs[0][1].name, runs, root)
        except SpecError as exc:
            reports.append(Report(str(spec), problems=exc.problems))
            continue
        done = {sid for sid, inst in plan.instances.items() if stage_status(root, inst.kind, sid) == "done"}
        reports.append(preflight(runs, plan, root, SOURCE_READER, machine, done, warnings_of(runs)))
    if args.json:
        print(json.dumps([r.to_json() for r in reports], indent=2))
    else:
        for r in reports:
            _print_report(r)
    return 0 if all(r.ok for r in reports) else 2


def _print_report(r: Any) -> None:
    """`BAD spec: N problems, M warnings`, then every problem, warning and info line, indented."""
    def plural(n: int, word: str) -> str:
        return f"{n} {word}{'s' if n != 1 else ''}"

    print(f"{'ok ' if r.ok else 'BAD'} {r.spec}: {plural(len(r.problems), 'problem')}, "
          f"{plural(len(r.warnings), 'warning')}")
    for p in r.problems:
        print(f"  {p}")
    for w in r.warnings:
        print(f"  {w if w.message.startswith('warning:') else replace(w, message=f'warning: {w.message}')}")
    for line in r.info:
        print(f"  info: {line}")


def _visible_gpus() -> int:
    """CUDA devices this process sees (0 without torch)."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count()


RESULTS_HELP = """\
One tidy table of every finished result of the specs: a row per (run, model variant, measure, scorer)
with value, ci_low, ci_high and n (the units the interval resamples), the sweep axes and every spec field
that differs between the given specs as columns (dotted paths), and the ids of the stages that produced
it (evaluate_id, attack_id, score_id). Only finished stages (results/<kind>/<id>/stage.json); a row
that several runs or specs share (same stage ids) appears once, `specs` and `run` listing them all.
Loads as it is: pandas.read_csv / read_parquet / read_json(lines=True).

Exit status: 0 with rows, 1 when none of the specs has a finished result yet, 2 on a spec problem.
"""

COMPARE_HELP = """\
OTHER − BASE for every measure of every run OTHER changed. Runs are matched as `mixsteer diff` sees them:
the same pretrained model (stage id) and model variant, a different steer / posttrain / evaluate / score
setting. Each difference is computed from the per-item files: a paired bootstrap interval where both
scored the same items, else an unpaired one (and the table says so); * marks an interval that excludes
0; `Changed:` lists the config fields that differ along the two stage chains. With several seeds the
differences are also pooled (mean ± sd over seeds, an interval resampling seeds, then items). Threshold
and bootstrap settings: BASE's evaluate section. Markdown on standard output; --html, --csv for files.

Exit status: 0 when something was compared, 1 when no matched pair of finished runs differs, 2 on a
spec problem.
"""


def _result_specs(plans: list[Any], names: list[str]) -> list[Any]:
    """Each plan's run rows, and per run its value of every spec field that differs between the plans
    (`mixsteer diff`, less description, report and resources)."""
    from compiler.diff import diff_plans
    from compiler.fields import flatten
    from compiler.plan import result_rows
    from runtime.results.table import SpecRuns

    paths = sorted({f.path for other in plans[1:] for f in diff_plans(plans[0], other).fields
                    if f.section not in ("description", "report", "resources")})
    out = []
    for plan, name in zip(plans, names):
        values = {rp.name: flatten(rp.spec.model_dump(mode="json", exclude={"sweep"})) for rp in plan.runs}
        fields = {run: {p: flat.get(p) for p in paths} for run, flat in values.items()}
        out.append(SpecRuns(name, result_rows(plan), fields))
    return out


def cmd_results(args: argparse.Namespace, root: Path) -> int:
    from compiler.workflow import compile_spec
    from runtime.results.table import result_table, results_folder

    plans = [compile_spec(user_path(s), root) for s in args.specs]
    table = result_table(_result_specs(plans, [str(s) for s in args.specs]), results_folder(root))
    out = args.output or sys.stdout.buffer
    if args.format == "csv":
        table.to_csv(out, index=False)
    elif args.format == "jsonl":
        table.to_json(out, orient="records", lines=True)
    else:
        table.to_parquet(out, index=False)
    print(f"{len(table)} rows from {table['evaluate_id'].nunique() + table['attack_id'].nunique()} finished "
          f"evaluate/attack stages of {len(args.specs)} spec(s)", file=sys.stderr)
    return 0 if len(table) else 1


def cmd_compare(args: argparse.Namespace, root: Path) -> int:
    import pandas as pd

    from compiler.workflow import compile_spec
    from runtime.results.compare import Boot, compare, pooled, write_csv
    from runtime.results.render import html_page, markdown
    from runtime.results.table import results_folder

    names = [str(s) for s in (args.base, *args.others)]
    plans = [compile_spec(user_path(s), root) for s in (args.base, *args.others)]
    ev = plans[0].runs[0].spec.evaluate
    if ev is None:
        raise MixsteerError(f"{args.base} has no `evaluate:` section: nothing to compare")
    boot = Boot(ev.bootstrap.resamples, ev.bootstrap.seed, ev.bootstrap.level)
    specs, folder = _result_specs(plans, names), results_folder(root)
    tables = [compare(specs[0], other, folder, threshold=ev.toxic_threshold, boot=boot) for other in specs[1:]]
    table = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
    pools = pooled(table, folder, threshold=ev.toxic_threshold, boot=boot)
    title = f"{', '.join(names[1:])} vs {names[0]}"
    print(markdown(table, pools, level=boot.level, title=title), end="")
    if args.html:
        args.html.write_text(html_page(table, pools, level=boot.level, title=title), encoding="utf-8")
    if args.csv:
        write_csv(table, args.csv)
    print(f"{len(table)} differences ({int(table['excludes_zero'].sum()) if len(table) else 0} intervals exclude 0, "
          f"{int((~table['paired'].astype(bool)).sum()) if len(table) else 0} unpaired)", file=sys.stderr)
    return 0 if len(table) else 1


SCORER_CHECK_HELP = """\
Measure each scorer of the spec's `scorer_check` section against references no one here wrote, and
print the agreement table. Runs the `scorer_check` stage directly (no Snakemake); its output is the
same content-addressed folder Snakemake would write (results/scorer_check/<id>/: agreement.json,
agreement.md, scores.jsonl), reused when it exists. Scores go through the shared cache (.cache/).

- RealToxicityPrompts (JSON Lines; `prompt` and `continuation` each carry `text` and Perspective's 2020
  `toxicity`): every selected record's prompt and continuation are scored; per scorer, Spearman's rho
  with Perspective and ROC AUC against Perspective >= threshold (prompts, continuations, both), and the
  expected maximum toxicity and toxicity probability it gives on the continuations next to
  Perspective's (one sample per prompt: RTP's own continuation). Records with a null Perspective
  toxicity are skipped and counted.
- ToxiGen `annotated` (Parquet): ROC AUC against toxicity_human >= label_threshold, Spearman's rho
  with toxicity_human.

Intervals: seeded percentile bootstrap over records (RTP) and rows (ToxiGen).
A scorer fitted on part of a reference is only fairly measured on the rest: a classifier fitted on
RTP texts (cooperleong00/deberta-v3-large_toxicity-scorer: 90k of them) must be checked on records
it never saw (`rtp.records`: skip / take / sample), ToxiGen's RoBERTa on ToxiGen's test split.
"""


def cmd_scorer_check(args: argparse.Namespace, root: Path) -> int:
    import contextlib

    from compiler.render import envelope_json
    from compiler.workflow import compile_spec
    from runtime.registry import load_stage
    from runtime.stage import execute

    plan = compile_spec(user_path(args.spec), root)
    checks = [inst for inst in plan.instances.values() if inst.kind == "scorer_check"]
    if not checks:
        raise MixsteerError(f"{args.spec} has no `scorer_check:` section")
    for inst in checks:
        out = root / inst.output
        if not (out / "stage.json").exists():
            with contextlib.redirect_stdout(sys.stderr):  # stage progress stays off the table
                execute(json.loads(envelope_json(inst)), load_stage(inst.kind), root=root)
        print(f"{inst.output}", file=sys.stderr)
        print((out / ("agreement.json" if args.json else "agreement.md")).read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
