"""`python -m runtime <stage> --config <stage.json>`: run one planned stage instance.

The runtime takes nothing but the stage JSON the compiler wrote: no argparse copies of config fields.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from compiler.errors import MixsteerError
from runtime.preempt import PREEMPTED_EXIT, Preempted
from runtime.registry import STAGES, load_stage
from runtime.stage import execute, read_envelope
from runtime.stage_paths import project_root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runtime",
        description="Run one stage instance from the JSON config that `mixsteer compile` wrote.",
    )
    parser.add_argument("stage", choices=sorted(STAGES), help="stage kind")
    parser.add_argument("--config", required=True, type=Path, help="stage JSON (build/<spec>/stages/<id>.json)")
    args = parser.parse_args(argv)
    try:
        envelope = read_envelope(args.config)
        if envelope["kind"] != args.stage:
            parser.error(f"{args.config} is a {envelope['kind']} stage, not {args.stage}")
        stage = load_stage(args.stage)
        out = execute(envelope, stage, root=project_root(args.config, envelope), rank_zero=stage.is_rank_zero)
    except Preempted as exc:
        print(f"preempted: {exc}", file=sys.stderr)
        return PREEMPTED_EXIT
    except MixsteerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.stage} {envelope['id']} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
