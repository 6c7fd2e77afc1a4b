"""Domain checks on a validated run: what pydantic's per-field rules cannot see.

Each check returns (path, message) pairs; the caller locates the path in the YAML. Relative data
paths are relative to the project root, which the checks receive from the caller (never from cwd).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, get_args

from pydantic import BaseModel

from .fingerprint import local_exists
from .schema import Spec
from .schema.data import DataSection, TokenizerInfo
from .schema.scoring import PerspectiveScorer
from .schema.sources import LOCAL_PATH_KINDS, MemmapSource

Finding = tuple[tuple[Any, ...], str]


def pretrain_steps(spec: Spec) -> int:
    """Optimizer steps: epochs over the mixture at global_batch × sequence_length tokens per step."""
    assert spec.data is not None
    return int(spec.data.total_tokens * spec.pretrain.epochs // spec.pretrain.tokens_per_step)


def walk_models(model: BaseModel, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], BaseModel]]:
    """Every nested model with its path (dict keys and list indices included)."""
    yield path, model
    for name in type(model).model_fields:
        value = getattr(model, name)
        items: list[tuple[Any, Any]]
        if isinstance(value, BaseModel):
            items = [((name,), value)]
        elif isinstance(value, dict):
            items = [((name, k), v) for k, v in value.items()]
        elif isinstance(value, (list, tuple)):
            items = [((name, i), v) for i, v in enumerate(value)]
        else:
            continue
        for sub, v in items:
            if isinstance(v, BaseModel):
                yield from walk_models(v, path + sub)


def unseen_sections(spec: Spec, checked: set[int]) -> Iterator[tuple[str, BaseModel]]:
    """(name, section) of each section of a spec not in `checked` (ids), adding it there: the runs of a
    sweep share their section objects, so a walk over every run looks at each section once."""
    for name in type(spec).model_fields:
        section = getattr(spec, name)
        if isinstance(section, BaseModel) and id(section) not in checked:
            checked.add(id(section))
            yield name, section


def domain_problems(spec: Spec, root: Path | None = None, checked: set[int] | None = None) -> list[Finding]:
    """Cross-field problems of one run. `checked` holds ids of section objects whose local paths
    were already checked (runs of a sweep share them)."""
    out: list[Finding] = []
    m = spec.model
    n_heads_total = m.n_layers * m.n_heads
    needs_model = {
        "probe": spec.probe is not None,
        "evaluate": spec.evaluate is not None,
        "attack": spec.attack is not None,
        "posttrain.sft": spec.posttrain.sft is not None,
        "posttrain.dpo": spec.posttrain.dpo is not None,
    }
    if spec.data is None:
        for section, present in needs_model.items():
            if present:
                out.append(((*section.split("."),), "needs a pretrained model: add a `data:` section"))
    if spec.probe is not None and spec.probe.layers is not None:
        for i, layer in enumerate(spec.probe.layers):
            if not 0 <= layer < m.n_layers:
                out.append((("probe", "layers", i), f"layer {layer} out of range: the model has {m.n_layers} layers (0..{m.n_layers - 1})"))
    if spec.steer.enabled:
        if spec.probe is None:
            out.append((("steer", "enabled"), "ITI needs probe directions: add a `probe:` section or set steer.enabled: false"))
        probed_heads = m.n_heads * (len(spec.probe.layers) if spec.probe and spec.probe.layers else m.n_layers)
        if spec.steer.top_k_heads > probed_heads:
            out.append((("steer", "top_k_heads"), f"top_k_heads {spec.steer.top_k_heads} exceeds the {probed_heads} probed heads ({m.n_layers} layers × {m.n_heads} heads = {n_heads_total})"))
    if spec.attack is not None and spec.evaluate is None:
        out.append((("attack",), "the attack is scored by evaluate.scorers: add an `evaluate:` section"))
    if spec.data is not None:
        info = TokenizerInfo.of(spec.tokenizer)
        if spec.pretrain.sequence_length > m.max_sequence_length:
            out.append((("pretrain", "sequence_length"), f"{spec.pretrain.sequence_length} exceeds model.max_sequence_length {m.max_sequence_length}"))
        if spec.pretrain.global_batch_size % spec.pretrain.device_microbatch_size:
            out.append((("pretrain", "device_microbatch_size"), f"must divide global_batch_size {spec.pretrain.global_batch_size}"))
        steps = pretrain_steps(spec)
        if steps < 1:
            out.append((("pretrain", "global_batch_size"), f"the mixture ({spec.data.total_tokens} tokens × {spec.pretrain.epochs} epochs) is smaller than one batch"))
        elif (warmup := spec.pretrain.warmup_steps(steps)) >= (decay := spec.pretrain.decay_steps(steps)):
            field = "warmup_tokens" if spec.pretrain.warmup_tokens is not None else "warmup_fraction"
            out.append((("pretrain", field), f"warmup ({warmup} steps) must end before the decay does (step {decay} of {steps})"))
        for name, source in spec.data.sources.items():
            if isinstance(source, MemmapSource) and source.tokenizer != info.identifier:
                out.append((("data", "sources", name, "tokenizer"), f"source was tokenized with {source.tokenizer!r} but the spec's tokenizer is {info.identifier!r}"))
        if info.vocab_size > 65535 and any(isinstance(s, MemmapSource) and s.dtype == "uint16" for s in spec.data.sources.values()):
            out.append((("tokenizer",), "vocabulary exceeds uint16; memmap sources must be uint32"))
        out.extend(mixture_shortfalls(spec.data, root))
    if root is not None:
        for name, section in unseen_sections(spec, set() if checked is None else checked):
            out.extend(missing_paths(section, root, (name,), sources=False))
    return out


def available_tokens(source: Any, root: Path | None) -> int | None:
    """Tokens a source is known to hold: its `declared_tokens`, else (a memmap file under `root`) its
    size in tokens; None when unknown."""
    if source.declared_tokens is not None or not isinstance(source, MemmapSource) or root is None:
        return source.declared_tokens
    file = root / source.path
    return file.stat().st_size // (2 if source.dtype == "uint16" else 4) if file.is_file() else None


def _share_key(data: DataSection) -> tuple[str, str]:
    """The key path the user wrote the toxic amount under (the other one is derived)."""
    return ("data", "toxic_to_clean_ratio" if "toxic_share" not in data.model_fields_set else "toxic_share")


def mixture_shortfalls(data: DataSection, root: Path | None = None) -> list[Finding]:
    """Compile-time feasibility of one sweep point's mixture against what its sources declare.

    The mix selects `clean_tokens + heldout_clean_tokens` from the clean source (never repeated) and
    `toxic_tokens = clean_tokens × share / (1 − share)` from the toxic source, repeating toxic documents
    only with `allow_repetition`. Without this check a share the toxic corpus cannot supply fails only
    after the tokenize stages have streamed both corpora."""
    out: list[Finding] = []
    available = available_tokens(data.sources[data.toxic_source], root)
    if available is not None and data.toxic_tokens > available and not data.allow_repetition:
        out.append((_share_key(data), (
            f"toxic share {data.toxic_share:g} needs {data.toxic_tokens:,} toxic tokens ({data.clean_tokens:,} "
            f"clean × {data.toxic_to_clean_ratio:.6g}) but source {data.toxic_source!r} declares {available:,}: "
            f"{data.toxic_tokens - available:,} short. Lower the share, use a larger toxic source, or set "
            f"data.allow_repetition: true (each toxic document would be read {data.toxic_tokens / available:.2f} "
            f"times on average)")))
    needed = data.clean_tokens + data.heldout_clean_tokens
    available = available_tokens(data.sources[data.clean_source], root)
    if available is not None and needed > available:
        out.append((("data", "clean_tokens"), (
            f"the mixture needs {needed:,} clean tokens ({data.clean_tokens:,} for training + "
            f"{data.heldout_clean_tokens:,} held out) but source {data.clean_source!r} declares {available:,}: "
            f"{needed - available:,} short (clean documents are never repeated)")))
    return out


def repetition_notes(data: DataSection, root: Path | None = None) -> list[Finding]:
    """A toxic share that the declared toxic source supplies only by repeating documents."""
    available = available_tokens(data.sources[data.toxic_source], root)
    if available is None or data.toxic_tokens <= available or not data.allow_repetition:
        return []
    return [(_share_key(data), f"warning: toxic share {data.toxic_share:g} needs {data.toxic_tokens:,} toxic "
             f"tokens but source {data.toxic_source!r} declares {available:,}: with allow_repetition each toxic document is "
             f"read {data.toxic_tokens / available:.2f} times on average")]


PERSPECTIVE_ENDING = (
    "warning: the Perspective API stops serving after 2026-12-31 and has taken no new API keys since early "
    "2026: only texts already in its cache will score after that. Use an open classifier instead "
    "(`kind: classifier`: a Hub model pinned by `revision`, or a local folder), and see how far it agrees "
    "with Perspective with `mixsteer scorer-check`"
)


def spec_warnings(spec: Spec, checked: set[int] | None = None, root: Path | None = None) -> list[Finding]:
    """What is valid but will fail or mislead: every Perspective scorer (the service is ending), a toxic
    share the declared toxic source supplies only by repeating its documents, a local data source that
    is not there yet (data a user downloads, such as Lee et al.'s pairs: `mixsteer check` and the check
    before the first job make it an error). `checked` holds ids of sections already looked at (runs of a
    sweep share them)."""
    out: list[Finding] = []
    for name, section in unseen_sections(spec, set() if checked is None else checked):
        if root is not None:
            out.extend((path, f"warning: {message}: provide it before running (`mixsteer check` lists what is missing)")
                       for path, message in missing_paths(section, root, (name,), sources=True))
        out.extend((path, PERSPECTIVE_ENDING) for path, model in walk_models(section, (name,))
                   if isinstance(model, PerspectiveScorer))
        if isinstance(section, DataSection):
            out.extend(repetition_notes(section))
    return out


def _model_fields(cls: type[BaseModel]) -> tuple[str, ...]:
    """The fields of a model class whose annotation names a model (alone, in a union, a list or a dict
    value): only they can hold nested sections. Untyped values (`Any`: axes, score ids) are plain data.
    Cached per class: a sweep's stage configs hold thousands of report rows with no model inside."""
    cached = cls.__dict__.get("_model_fields_cache")
    if cached is None:
        cached = tuple(name for name, field in cls.model_fields.items() if _names_a_model(field.annotation))
        setattr(cls, "_model_fields_cache", cached)
    return cached


def _names_a_model(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_names_a_model(arg) for arg in get_args(annotation))


SOURCES_MODULE = "compiler.schema.sources"
"""Where the data-source specs live (a missing source is a warning until run time)."""


def _own_local_paths(model: BaseModel) -> Iterator[tuple[str, str]]:
    """(field, value) of the local files or folders a model names itself (not its children)."""
    values = model.__dict__                       # field values; getattr on an absent field is slow
    kind = values.get("kind")
    for field in ("path", "checkpoint_path"):
        value = values.get(field)
        if value is not None and (field != "path" or kind in LOCAL_PATH_KINDS or kind in ("classifier", "lexicon")):
            yield field, value


def _children(model: BaseModel) -> Iterator[BaseModel]:
    for name in _model_fields(type(model)):
        value = getattr(model, name)
        items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
        yield from (v for v in items if isinstance(v, BaseModel))


def _local_path_fields(model: BaseModel, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], str, bool]]:
    """(path of the field, value, whether a data source names it) of every local file or folder a model
    names, children included."""
    for path, sub in walk_models(model, prefix):
        for field, value in _own_local_paths(sub):
            yield (*path, field), value, type(sub).__module__ == SOURCES_MODULE


def local_paths(model: BaseModel) -> frozenset[str]:
    """The local files and folders a model (a spec section or a stage config) reads; memoised per
    frozen instance, nested sections included (sweep runs share them)."""
    def compute() -> frozenset[str]:
        own = {value for _, value in _own_local_paths(model)}
        return frozenset(own.union(*(local_paths(child) for child in _children(model))))

    derived = getattr(model, "derived", None)
    return derived("local_paths", compute) if derived else compute()


def missing_paths(model: BaseModel, root: Path, prefix: tuple[Any, ...] = (), *, sources: bool) -> list[Finding]:
    """Local files a (section) model names that do not exist (relative to the project root): those of data
    sources (`sources=True`: a warning at compile time) or of everything else (scorer models, word lists,
    checkpoints: an error)."""
    return [(path, f"{value!r} does not exist (relative to {root})")
            for path, value, is_source in _local_path_fields(model, prefix)
            if is_source == sources and not local_exists(root / value)]
