"""Compile + `snakemake -n` of a 1,000-run sweep vs a hand-written Snakefile doing the same dry run.

Both workflows have the same job graph: 10 toxic shares × 10 seeds × 10 ITI strengths over the demo
spec's stages (pretraining shared across strengths). The hand-written one is what a careful user
would write without mixsteer: wildcards per axis, `expand()` targets, and the same scheduling
declarations per rule that the generated rules carry for the SLURM executor plugin (threads, mem_mb,
runtime, gres, nodes, mpi, tasks, tasks_per_gpu, cpus_per_task, slurm_partition), as constants. The
script refuses to time two job graphs that differ in size. It comes in two forms, both timed: minimal
(`touch {output}`, no log, no software environment) and lint-clean (a `log:` and a `conda:` per rule and the log used in the shell command:
what `snakemake --lint` asks of every rule, and so what the generated rules must carry).

Compile alone is timed as the first call in a fresh process (what `snakemake` pays at parse), in
`COMPILES` processes. The dry runs come in `REPEATS` rounds, each with every variant once (the
lint-clean one twice, bracketing mixsteer's): on this VM the speed of the same work drifts by up to a
third within minutes, so each mixsteer time is divided by its own round's lint-clean mean and the
median of those ratios is reported, beside the ratio of the best times. Run from the repo root:

    python bench/compile_scaling.py
"""
from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARES = [round(0.025 * i, 3) for i in range(10)]
SEEDS = list(range(10))
ALPHAS = [float(a) for a in range(1, 11)]
SCORERS = ["primary", "second"]
"""Two scorers per generation set, as the demo spec has: one `score` job each."""
REPEATS = 5
COMPILES = 5

HAND_WRITTEN = textwrap.dedent('''
    SHARES = {shares}
    SEEDS = {seeds}
    ALPHAS = {alphas}
    VARIANTS = ["base", "prompting", "sft", "dpo"]
    SCORERS = {scorers}
    RESOURCES = dict(mem_mb=2000, runtime=10, gres="", nodes=1, mpi="", tasks=1, tasks_per_gpu=0, cpus_per_task=1,
                     slurm_partition="")

    rule all:
        input: "results/report/stage.json"

    rule tokenizer:
        output: "results/tokenizer/stage.json"
        threads: 1
        resources: **RESOURCES
        shell: "touch {{output}}"

    rule tokenize:
        input: "results/tokenizer/stage.json"
        output: "results/tokenize/{{source}}/stage.json"
        threads: 1
        resources: **RESOURCES
        shell: "touch {{output}}"

    rule mix:
        input: "results/tokenize/clean/stage.json", "results/tokenize/toxic/stage.json"
        output: "results/mix/{{share}}/stage.json"
        threads: 1
        resources: **RESOURCES
        shell: "touch {{output}}"

    rule pretrain:
        input: "results/mix/{{share}}/stage.json"
        output: "results/pretrain/{{share}}_{{seed}}/stage.json"
        threads: 1
        resources: **RESOURCES
        shell: "touch {{output}}"

    rule activations:
        input: "results/pretrain/{{share}}_{{seed}}/stage.json"
        output: "results/activations/{{share}}_{{seed}}/stage.json"
        threads: 1
        resources: **RESOURCES
        shell: "touch {{output}}"

    rule probe:
        input: "results/activations/{{share}}_{{seed}}/stage.json"
        output: "results/probe/{{share}}_{{seed}}/stage.json"
        threads: 1
        resources: **RESOURCES
        shell: "touch {{output}}"

    rule steer:
        input: "results/pretrain/{{share}}_{{seed}}/stage.json", "results/probe/{{share}}_{{seed}}/stage.json"
        output: "results/steer/{{share}}_{{seed}}_{{alpha}}/stage.json"
        threads: 1
        resources: **RESOURCES
        shell: "touch {{output}}"

    rule posttrain:
        input: "results/pretrain/{{share}}_{{seed}}/stage.json"
        output: "results/posttrain/{{share}}_{{seed}}_{{method}}/stage.json"
        threads: 1
        resources: **RESOURCES
        shell: "touch {{output}}"

    def model_of(wc):
        if wc.variant in ("base", "prompting"):
            return f"results/pretrain/{{wc.share}}_{{wc.seed}}/stage.json"
        return f"results/posttrain/{{wc.share}}_{{wc.seed}}_{{wc.variant}}/stage.json"

    rule evaluate:
        input: model_of, "results/mix/{{share}}/stage.json"
        output: "results/evaluate/{{share}}_{{seed}}_{{variant}}/stage.json"
        threads: 1
        resources: **RESOURCES
        shell: "touch {{output}}"

    rule evaluate_iti:
        input: "results/steer/{{share}}_{{seed}}_{{alpha}}/stage.json", "results/mix/{{share}}/stage.json"
        output: "results/evaluate_iti/{{share}}_{{seed}}_{{alpha}}/stage.json"
        threads: 1
        resources: **RESOURCES
        shell: "touch {{output}}"

    rule score:
        input: "results/{{texts}}/{{name}}/stage.json"
        output: "results/score/{{scorer}}-{{texts}}-{{name}}/stage.json"
        threads: 1
        resources: **RESOURCES
        shell: "touch {{output}}"

    rule report:
        input:
            expand("results/score/{{scorer}}-evaluate-{{share}}_{{seed}}_{{variant}}/stage.json", scorer=SCORERS,
                   share=SHARES, seed=SEEDS, variant=VARIANTS),
            expand("results/score/{{scorer}}-evaluate_iti-{{share}}_{{seed}}_{{alpha}}/stage.json", scorer=SCORERS,
                   share=SHARES, seed=SEEDS, alpha=ALPHAS),
            expand("results/probe/{{share}}_{{seed}}/stage.json", share=SHARES, seed=SEEDS),
        output: "results/report/stage.json"
        threads: 1
        resources: **RESOURCES
        shell: "touch {{output}}"
''').format(shares=SHARES, seeds=SEEDS, alphas=ALPHAS, scorers=SCORERS)


def lint_clean(snakefile: str) -> str:
    """The hand-written Snakefile with what `snakemake --lint` asks of each rule: a log file (used in
    the shell command) and a software environment."""
    out = []
    for line in snakefile.splitlines():
        out.append(line)
        stripped = line.strip()
        if stripped.startswith('output: "results/'):
            kind, wildcards = stripped.split('"')[1].split("/")[1:3]
            log = f"logs/{kind}/{wildcards}.log" if "{" in wildcards else f"logs/{kind}.log"
            indent = line[: len(line) - len(line.lstrip())]
            out += [f'{indent}log: "{log}"', f'{indent}conda: "envs/bench.yaml"']
    return "\n".join(out).replace('shell: "touch {output}"', 'shell: "touch {output} > {log} 2>&1"') + "\n"


def checkout(folder: Path) -> Path:
    """A project folder with the sweep spec, the Snakefile and the shipped data, and no build/."""
    folder.mkdir()
    shutil.copy(ROOT / "Snakefile", folder)
    shutil.copytree(ROOT / "data", folder / "data")
    (folder / "sweep.yaml").write_text(sweep_spec())
    return folder


def first_compile_seconds(work: Path) -> float:
    """Validate + plan the sweep as the first call in a fresh Python process (the compiler's import
    excluded; the stage modules it loads on the way included)."""
    code = ("import sys, time; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
            "from compiler.workflow import compile_spec; t0 = time.perf_counter(); "
            "compile_spec(Path('sweep.yaml'), Path(sys.argv[2])); print(time.perf_counter() - t0)")
    return float(timed([sys.executable, "-c", code, str(ROOT), str(work)], work)[1])


def sweep_spec() -> str:
    demo = (ROOT / "specs" / "demo.yaml").read_text().split("attack:")[0]  # same stages, no red-teaming
    return demo + textwrap.dedent(f"""
        sweep:
          grid:
            data.toxic_share: {SHARES}
            seed: {SEEDS}
            steer.alpha: {ALPHAS}
        """)


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{cmd} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return time.perf_counter() - t0, r.stdout


def jobs(out: str) -> int:
    return int(next(line.split()[-1] for line in out.splitlines() if line.startswith("total")))


def main() -> None:
    from compiler.workflow import Workflow, compile_spec

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        mine, hand, clean = work / "mixsteer", work / "hand", work / "hand-lint-clean"
        for d in (hand, clean):
            d.mkdir()
        checkout(mine)
        (hand / "Snakefile").write_text(HAND_WRITTEN)
        (clean / "Snakefile").write_text(lint_clean(HAND_WRITTEN))
        (clean / "envs").mkdir()
        shutil.copy(ROOT / "envs" / "mixsteer.yaml", clean / "envs" / "bench.yaml")

        plan = compile_spec(Path("sweep.yaml"), mine)
        t_plan = sorted(first_compile_seconds(mine) for _ in range(COMPILES))
        t0 = time.perf_counter()
        Workflow.compile([Path("sweep.yaml")], mine)
        t_compile_cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        Workflow.compile([Path("sweep.yaml")], mine)
        t_compile_warm = time.perf_counter() - t0

        dry = [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "--nolock"]
        mine_jobs, hand_jobs = jobs(timed([*dry, "--config", "spec=sweep.yaml"], mine)[1]), jobs(timed(dry, hand)[1])
        if mine_jobs != hand_jobs:  # the demo spec gained or lost a stage: the hand-written file must follow
            raise SystemExit(f"unequal job graphs: mixsteer {mine_jobs} jobs, hand-written {hand_jobs}")
        t_hand, t_clean, t_cached, t_edited, t_fresh = [], [], [], [], []
        for r in range(REPEATS):  # interleaved rounds: the box's drift hits a round's runs alike
            fresh = checkout(work / f"fresh-{r}")  # no build/ yet, like a new clone
            t, out_mine = timed([*dry, "--config", "spec=sweep.yaml"], fresh)  # compiles from scratch
            t_fresh.append(t)
            t, out_hand = timed(dry, hand)
            t_hand.append(t)
            t_clean.append(timed(dry, clean)[0])
            t_cached.append(timed([*dry, "--config", "spec=sweep.yaml"], mine)[0])  # parse cache hit
            spec = mine / "sweep.yaml"
            spec.write_text(spec.read_text() + "\n")  # an edit: recompile at parse, build/ present
            t_edited.append(timed([*dry, "--config", "spec=sweep.yaml"], mine)[0])
            t_clean.append(timed(dry, clean)[0])  # twice per round, around mixsteer's runs
    runs = len(plan.runs)
    print(f"sweep: {runs} runs, {len(plan.instances)} stage instances; "
          f"dry-run jobs: mixsteer {jobs(out_mine)}, hand-written {jobs(out_hand)}")
    print(f"compile (validate + plan, first call in a fresh process): best {t_plan[0]:.2f} s, "
          f"median {t_plan[len(t_plan) // 2]:.2f} s of {COMPILES} (goal < 1 s): "
          + " ".join(f"{t:.2f}" for t in t_plan))
    print(f"`mixsteer compile` (all build files, {len(plan.instances)} stage JSONs; cold / warm): "
          f"{t_compile_cold:6.2f} s / {t_compile_warm:6.2f} s")
    # Paired per round (a round's lint-clean runs bracket mixsteer's): the median of the per-round
    # ratios cancels drift between rounds; the ratio of the bests is printed beside it.
    clean_round = [(a + b) / 2 for a, b in zip(t_clean[0::2], t_clean[1::2])]

    def ratios(times: list[float]) -> str:
        paired = statistics.median(t / c for t, c in zip(times, clean_round))
        return f"{paired:5.2f}x paired, {min(times) / min(t_clean):5.2f}x of bests"

    print(f"snakemake -n, hand-written, minimal:         {min(t_hand):6.2f} s   (best of {REPEATS})")
    print(f"snakemake -n, hand-written, lint-clean:      {min(t_clean):6.2f} s   (best of {2 * REPEATS}; "
          f"the reference below)")
    print(f"snakemake -n, mixsteer, compile + dry run after a spec edit: {min(t_edited):6.2f} s   "
          f"{ratios(t_edited)} (goal <= 1.2x); "
          f"{statistics.median(t / h for t, h in zip(t_edited, t_hand)):5.2f}x vs minimal")
    print(f"snakemake -n, mixsteer, parse cache hit (no compile):        {min(t_cached):6.2f} s   "
          f"{ratios(t_cached)}; {statistics.median(t / h for t, h in zip(t_cached, t_hand)):5.2f}x vs minimal")
    print(f"snakemake -n, mixsteer, first compile + dry run (no build/):   {min(t_fresh):6.2f} s   "
          f"{ratios(t_fresh)}")

if __name__ == "__main__":
    main()
