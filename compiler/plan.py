"""Validated runs → a deduplicated graph of stage instances with content ids.

Per run the planner instantiates each stage whose section is present, wiring inputs by id:

    tokenizer → tokenize → mix → pretrain ─┬─ activations → probe → steer ─┐
                                           ├─ posttrain (sft, dpo) ─────────┼─ evaluate / attack per model variant
                                           └────────────────────────────────┘        └─ score per scorer
    toy (independent)                     report ← every evaluate, score, probe, attack, toy

Scoring is its own stage: one `score` instance per (evaluate or attack instance, scorer), so the scorers
are in no id upstream of them and changing one reruns only scoring and the report.

Model variants: `base` (pretrained), `prompting` (base + instruction prefix, a pseudo-stage: an
evaluate instance with `prefix`), `iti`, its seeded controls `iti_random_direction/<n>` and
`iti_random_heads/<n>` (evaluated, never attacked), `sft`, `dpo`. Instances are keyed by id, so runs
that share a config share the instance: a sweep over `steer.alpha` has one pretraining per toxic share
and seed, and a sweep over shares and seeds tokenizes each source once (`tokenize`: one instance per
source, tokenizer and shard size, reading as far as the plan's largest budget needs) and has one mix per
share.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from runtime.evaluate import section_fields as evaluate_fields
from runtime.registry import load_stage

from .checks import local_paths, pretrain_steps
from .fingerprint import fingerprint, local_exists
from .ids import stage_id
from .lock import LockState
from .plan_scorer_check import plan_scorer_check
from .schema import Spec
from .schema.base import StrictModel
from .schema.data import DataSection, TokenizerInfo
from .schema.report import VARIANT_ORDER
from .schema.resources import StageResources


@dataclass(frozen=True)
class StageInstance:
    """One node of the plan: a stage kind with a concrete config and upstream ids."""

    kind: str
    id: str
    version: int
    config: StrictModel
    inputs: dict[str, str]
    resources: StageResources
    files: dict[str, str]  # local file read (relative to the root) → content fingerprint; in the id

    @property
    def output(self) -> str:
        return f"results/{self.kind}/{self.id}"


@dataclass
class RunPlan:
    """The instances one run uses, by role (`pretrain`, `evaluate/iti`, …)."""

    name: str
    axes: dict[str, Any]
    spec: Spec
    roles: dict[str, str] = field(default_factory=dict)


@dataclass
class Plan:
    spec_name: str
    instances: dict[str, StageInstance]
    runs: list[RunPlan]
    sources: tuple[str, ...] = ()  # files read: the spec, its extends chain and their lock files
    lock: LockState = field(default_factory=LockState)

    @property
    def report_id(self) -> str | None:
        return next((i for i, s in self.instances.items() if s.kind == "report"), None)


class _Builder:
    """Adds instances by content id. Runs of a sweep share their section objects (interned by
    `compiler.validate`), so a request made of the same objects is answered from a memo without
    building or hashing the config again."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.instances: dict[str, StageInstance] = {}
        self._memo: dict[tuple, str] = {}
        self._keep: list[Any] = []  # memo keys use id(); keep those objects alive
        self._fingerprints: dict[str, str | None] = {}

    def add(self, kind: str, config_fields: dict[str, Any], inputs: dict[str, str], spec: Spec) -> str:
        key = (kind, tuple(config_fields), tuple(map(_identity, config_fields.values())),
               tuple(inputs.items()), id(spec.resources), id(spec.precision))
        if key in self._memo:
            return self._memo[key]
        self._keep.append((config_fields, spec.resources, spec.precision))
        module = load_stage(kind)
        if "compute" in module.Config.model_fields:  # a model stage: where and in what format (runtime.device)
            config_fields = {**config_fields, "compute": spec.precision.compute(spec.resources.of(kind).gpus)}
        config = module.Config(**config_fields)
        files = self._files(config)
        sid = stage_id(kind, module.VERSION, config.id_json(), inputs, files)
        if sid not in self.instances:
            self.instances[sid] = StageInstance(
                kind, sid, module.VERSION, config, dict(inputs), spec.resources.of(kind), files)
        self._memo[key] = sid
        return sid

    def _files(self, config: StrictModel) -> dict[str, str]:
        if self.root is None:
            return {}
        out = {}
        for path in sorted(local_paths(config)):
            if path not in self._fingerprints:
                full = self.root / path
                self._fingerprints[path] = fingerprint(full) if local_exists(full) else None
            if self._fingerprints[path] is not None:
                out[path] = self._fingerprints[path]
        return out

    def tokenizer_info(self, tokenizer: Any) -> TokenizerInfo:
        """One TokenizerInfo object per tokenizer section, so the memo above keeps hitting."""
        key = ("tokenizer-info", id(tokenizer))
        if key not in self._memo:
            self._memo[key] = TokenizerInfo.of(tokenizer)
        return self._memo[key]


def _identity(value: Any) -> Any:
    """A memo key for one config value: models and dicts by object, lists by items, scalars by type
    and value (so 1, 1.0 and True stay apart)."""
    kind = type(value)
    if kind is list:
        return (list, tuple(map(_identity, value)))
    if isinstance(value, (BaseModel, dict)):
        return (object, id(value))
    return (kind, value)


REPORT_INPUT_ROLES = ("evaluate", "attack", "score", "probe", "toy", "steer", "pretrain", "mix", "scorer_check")
"""Roles (first part) whose instances the report reads."""


def build_plan(spec_name: str, runs: list[tuple[Any, Spec]], root: Path | None = None, *,
               compare: bool = True) -> Plan:
    """`runs` are (resolve.Run, Spec) pairs from `compiler.validate`. With `root`, the content of every
    local file a stage reads enters its id (`compiler.fingerprint`). With `compare`, the specs of
    `report.compare_to` are planned too (their own `compare_to` is not followed)."""
    b = _Builder(root)
    fills = tokenize_fills([spec.data for _, spec in runs if spec.data is not None])
    run_plans = []
    for run, spec in runs:
        rp = RunPlan(run.name, dict(run.axes), spec)
        rp.roles = _plan_run(b, spec, fills)
        run_plans.append(rp)
    report_runs = [_report_row(rp, b.instances) for rp in run_plans]
    inputs = sorted({i for rp in run_plans for role, i in rp.roles.items()
                     if role.split("/")[0] in REPORT_INPUT_ROLES})
    first = run_plans[0].spec
    compared = _compared(first.report.compare_to, root, b.instances) if compare else []
    inputs = sorted(set(inputs) | {sid for _, rows, _ in compared for sid in _compared_ids(rows)})
    if inputs:
        rid = b.add("report", dict(
            spec_name=spec_name, title=first.report.title or first.description or spec_name,
            significance_alpha=first.report.significance_alpha,
            token_view_texts=list(first.report.token_view_texts),
            token_view_top_k_heads=first.report.token_view_top_k_heads,
            runs=[row for rows in report_runs for row in rows],
            **(dict(scorer=first.evaluate.primary_scorer, scorers=first.evaluate.scorers, toxic_threshold=first.evaluate.toxic_threshold,
                    bootstrap=first.evaluate.bootstrap) if first.evaluate is not None else {}),
            labelled_data=first.probe.data if first.probe is not None else None,
            compare_to=[{"spec": path, "runs": rows} for path, rows, _ in compared],
        ), {i: i for i in inputs}, first)
        for rp in run_plans:
            rp.roles["report"] = rid
    lock = runs[0][0].document.lock or LockState()
    sources = tuple(sorted({s for run, _ in runs for s in run.document.sources} | set(lock.lock_files)
                           | {s for _, _, files in compared for s in files}))
    return Plan(spec_name, b.instances, run_plans, sources, lock)


def _compared(paths: list[str], root: Path | None, instances: dict[str, StageInstance]
              ) -> list[tuple[str, list[dict[str, Any]], tuple[str, ...]]]:
    """(path, run rows, files read) of each spec of `report.compare_to`; the instances their evaluate and
    score stages need (and everything upstream) join `instances`."""
    from .validate import load_spec

    out = []
    for path in paths:
        file = Path(path) if root is None else root / path
        plan = build_plan(file.stem, load_spec(file, root, path), root, compare=False)
        rows = result_rows(plan)
        todo = list(_compared_ids(rows))
        while todo:
            sid = todo.pop()
            if sid not in instances:
                instances[sid] = plan.instances[sid]
                todo += plan.instances[sid].inputs.values()
        out.append((path, rows, plan.sources))
    return out


def _compared_ids(rows: list[dict[str, Any]]) -> list[str]:
    """The evaluate and score ids a comparison reads."""
    return [sid for r in rows for sid in (r.get("evaluate"), *(r.get("scores") or {}).values()) if sid]


FillsKey = tuple[str, str, int, int | None]
"""A source as one `tokenize` instance reads it: (role, source JSON, shard size, held-out budget for clean)."""


def _fills_key(data: DataSection, role: str) -> FillsKey:
    name = data.clean_source if role == "clean" else data.toxic_source
    return (role, data.sources[name].id_json(), data.tokens_per_file,
            data.heldout_clean_tokens if role == "clean" else None)


def tokenize_fills(sections: list[DataSection]) -> dict[FillsKey, list[int] | None]:
    """How far each source must be tokenized for every mixture of the plan (`tokenize.Config.fills`):
    clean: the held-out budget, then the largest clean budget; toxic: the largest toxic budget. A source
    that declares no more tokens than that (`declared_tokens`) is read whole (`None`), so the toxic
    source's instance, and every mix reading it, keeps its id when a larger share joins the sweep."""
    largest: dict[FillsKey, tuple[DataSection, int]] = {}
    for data in {id(d): d for d in sections}.values():
        for role, budget in (("clean", data.clean_tokens), ("toxic", data.toxic_tokens)):
            key = _fills_key(data, role)
            if budget and (key not in largest or budget > largest[key][1]):
                largest[key] = (data, budget)
    out: dict[FillsKey, list[int] | None] = {}
    for key, (data, budget) in largest.items():
        role = key[0]
        fills = [f for f in ((data.heldout_clean_tokens, budget) if role == "clean" else (budget,)) if f]
        declared = data.sources[data.clean_source if role == "clean" else data.toxic_source].declared_tokens
        out[key] = None if declared is not None and declared <= sum(fills) else fills
    return out


def _plan_data(b: _Builder, spec: Spec, info: TokenizerInfo, fills: dict[FillsKey, list[int] | None],
               roles: dict[str, str]) -> str:
    """The `tokenize` instance of each source the mixture reads (roles `tokenize/clean`, `tokenize/toxic`)
    and the mix over them; returns the mix id."""
    data = spec.data
    inputs = {}
    for role, name, budget in (("clean", data.clean_source, data.clean_tokens),
                               ("toxic", data.toxic_source, data.toxic_tokens)):
        if budget:
            inputs[role] = roles[f"tokenize/{role}"] = b.add("tokenize", dict(
                source=data.sources[name], tokenizer=info, fills=fills[_fills_key(data, role)],
                tokens_per_file=data.tokens_per_file, tokenize_workers=data.tokenize_workers,
            ), {"tokenizer": roles["tokenizer"]}, spec)
    return b.add("mix", dict(data=data, tokenizer=info), inputs, spec)


def _plan_run(b: _Builder, spec: Spec, fills: dict[FillsKey, list[int] | None]) -> dict[str, str]:
    roles: dict[str, str] = {}
    if spec.toy.enabled:
        roles["toy"] = b.add("toy", dict(toy=spec.toy), {}, spec)
    roles |= plan_scorer_check(b, spec)
    if spec.data is None:
        return roles
    info = b.tokenizer_info(spec.tokenizer)
    tok_sources = spec.data.sources if spec.tokenizer.kind == "bpe" else {}
    roles["tokenizer"] = b.add("tokenizer", dict(tokenizer=spec.tokenizer, info=info, sources=tok_sources), {}, spec)
    roles["mix"] = _plan_data(b, spec, info, fills, roles)
    roles["pretrain"] = b.add("pretrain", dict(
        model=spec.model, vocab=info, train=spec.pretrain, max_steps=pretrain_steps(spec), seed=spec.seed,
    ), {"mix": roles["mix"], "tokenizer": roles["tokenizer"]}, spec)
    models = {"base": roles["pretrain"]}
    if spec.probe is not None:
        p = spec.probe
        layers = sorted(p.layers) if p.layers is not None else list(range(spec.model.n_layers))
        roles["activations"] = b.add("activations", dict(
            data=p.data, token_position=p.token_position, max_length_tokens=p.max_length_tokens,
            layers=layers, batch_size=p.batch_size,
        ), {"model": roles["pretrain"]}, spec)
        roles["probe"] = b.add("probe", dict(
            validation_fraction=p.validation_fraction, split_seed=p.split_seed,
            recipe=p.recipe, implementation=p.implementation, l2_penalty=p.l2_penalty, max_iterations=p.max_iterations,
            accuracy_threshold=p.accuracy_threshold, gradient_tolerance=p.gradient_tolerance,
            entanglement_heads=p.entanglement_heads, min_attribute_examples=p.min_attribute_examples,
        ), {"activations": roles["activations"]}, spec)
        if spec.steer.enabled:
            models |= _plan_steer(b, spec, roles)
    for method in ("sft", "dpo"):
        section = getattr(spec.posttrain, method)
        if section is not None and section.enabled:
            models[method] = roles[f"posttrain/{method}"] = b.add(
                "posttrain", {method: section, "seed": spec.seed}, {"model": roles["pretrain"]}, spec)
    if spec.evaluate is not None:
        ev = spec.evaluate
        detection_data = spec.probe.data if ev.detection.data is None and spec.probe is not None else None
        variants: dict[str, tuple[str, str | None]] = {v: (m, None) for v, m in models.items()}
        if spec.posttrain.prompting.enabled:
            variants["prompting"] = (roles["pretrain"], spec.posttrain.prompting.prefix)
        for variant, (model_id, prefix) in sorted(variants.items(), key=lambda kv: _variant_rank(kv[0])):
            inputs = {"model": model_id, "mix": roles["mix"]}
            if variant not in ("base", "prompting") and ev.cross_entropy.kl_to_base:
                inputs["base"] = roles["pretrain"]
            roles[f"evaluate/{variant}"] = b.add("evaluate", dict(
                **evaluate_fields(ev), prefix=prefix, detection_data=detection_data, seed=spec.seed,
            ), inputs, spec)
            roles |= _plan_scores(b, spec, "evaluate", variant, roles[f"evaluate/{variant}"])
            if spec.attack is not None and spec.attack.enabled and variant in spec.attack.variants:  # never a control
                roles[f"attack/{variant}"] = b.add("attack", dict(attack=spec.attack, seed=spec.seed),
                                                   {"model": model_id}, spec)
                roles |= _plan_scores(b, spec, "attack", variant, roles[f"attack/{variant}"])
    return roles


def _plan_scores(b: _Builder, spec: Spec, texts_kind: str, variant: str, texts_id: str) -> dict[str, str]:
    """One `score` instance per scorer of `evaluate.scorers` over one evaluate or attack instance: roles
    `score/<label>/<texts_kind>/<variant>`. Attacks are scored by every scorer too (a few hundred texts:
    cheap), so each scorer's attack success sits beside its toxicity; the primary's is the headline."""
    ev = spec.evaluate
    source = "generations" if texts_kind == "evaluate" else "attack"
    judge = spec.attack.judge if source == "attack" else None
    return {f"score/{scorer.label}/{texts_kind}/{variant}": b.add("score", dict(
        scorer=scorer, source=source, toxic_threshold=ev.toxic_threshold, bootstrap=ev.bootstrap, judge=judge,
    ), {"texts": texts_id}, spec) for scorer in ev.scorers}


def _plan_steer(b: _Builder, spec: Spec, roles: dict[str, str]) -> dict[str, str]:
    """The ITI model and its control draws: roles `steer` and `steer/<control>/<n>`; returns the model
    variants they add (`iti`, `iti_<control>/<n>`)."""
    s = spec.steer
    inputs = {"model": roles["pretrain"], "probe": roles["probe"], "activations": roles["activations"]}
    common = dict(top_k_heads=s.top_k_heads, direction=s.direction, alpha=s.alpha, positions=s.positions)
    models = {"iti": b.add("steer", common, inputs, spec)}
    roles["steer"] = models["iti"]
    if s.controls.alphas is not None and s.alpha not in s.controls.alphas:
        return models
    for control, draws in (("random_direction", s.controls.random_directions),
                           ("random_heads", s.controls.random_heads)):
        for n in range(draws):
            models[f"iti_{control}/{n}"] = roles[f"steer/{control}/{n}"] = b.add(
                "steer", dict(common, control=control, control_seed=n, seed=spec.seed), inputs, spec)
    return models


def _variant_rank(variant: str) -> tuple[int, int]:
    """Sort key of a variant (`iti_random_heads/3` → after every random-direction draw, by draw)."""
    kind, _, draw = variant.partition("/")
    return VARIANT_ORDER.index(kind), int(draw or 0)


def _report_row(rp: RunPlan, instances: dict[str, StageInstance]) -> list[dict[str, Any]]:
    """One row per evaluated model variant of a run: what the report tabulates and plots.

    `variant` is one of `VARIANT_ORDER`; a control row also names `control` and `control_seed`; ITI rows
    (real and controls) carry their `steer` id, `alpha`, `positions` and `top_k_heads`, other rows None."""
    spec = rp.spec
    common = {
        "run": rp.name, "axes": rp.axes, "seed": spec.seed,
        "toxic_share": spec.data.toxic_share if spec.data else None,
        "pretrain": rp.roles.get("pretrain"), "mix": rp.roles.get("mix"), "probe": rp.roles.get("probe"),
        "toy": rp.roles.get("toy"),
    }
    no_steer = {"steer": None, "alpha": None, "positions": None, "top_k_heads": None,
                "control": None, "control_seed": None}
    rows = []
    for role, sid in rp.roles.items():
        if not role.startswith("evaluate/"):
            continue
        variant = role.split("/", 1)[1]
        kind, _, draw = variant.partition("/")
        steer = dict(no_steer)
        if kind.startswith("iti"):
            control = kind[len("iti_"):] if kind.startswith("iti_") else None
            steer_id = rp.roles["steer" if control is None else f"steer/{control}/{draw}"]
            s = instances[steer_id].config
            steer = {"steer": steer_id, "alpha": s.alpha, "positions": s.positions, "top_k_heads": s.top_k_heads,
                     "control": s.control, "control_seed": s.control_seed}
        rows.append({**common, **steer, "variant": kind, "evaluate": sid, "scores": _scores(rp, "evaluate", variant),
                     "attack": rp.roles.get(f"attack/{variant}"), "attack_scores": _scores(rp, "attack", variant)})
    if not rows:
        rows.append({**common, **no_steer, "variant": None, "evaluate": None, "scores": {}, "attack": None,
                     "attack_scores": {}})
    return rows


def result_rows(plan: Plan) -> list[dict[str, Any]]:
    """The report rows of every run of `plan` (`_report_row`): what `runtime.results` reads."""
    return [row for rp in plan.runs for row in _report_row(rp, plan.instances)]


def _scores(rp: RunPlan, texts_kind: str, variant: str) -> dict[str, str]:
    """{scorer label: score id} of one evaluate or attack instance, in `evaluate.scorers` order (the
    primary first); empty when there is none."""
    if rp.spec.evaluate is None or f"{texts_kind}/{variant}" not in rp.roles:
        return {}
    return {s.label: rp.roles[f"score/{s.label}/{texts_kind}/{variant}"] for s in rp.spec.evaluate.scorers}
