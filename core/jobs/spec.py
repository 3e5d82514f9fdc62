"""A job spec: every setting documented (help, default, range), round-tripping through TOML.

    kind = "sae"
    [run]   name, checkpoint_every, evaluation sizes
    [data]  teacher, corpus, hook, cache or stream
    [sae]   SAEConfig fields (d_in, hook_name and model_name come from the teacher)
    [train] TrainConfig fields

    kind = "student"   (a tiny transformer distilled from the teacher's pooled residual, seed 000)
    [run] [data] as above (data from an activation cache only)
    [student] StudentConfig fields
    [train]   StudentTrainConfig fields (documents per step, epochs, early stopping)

    kind = "variant"   (a sibling of the teacher, fine-tuned on a corpus: one half of a pair)
    [run] [data] as above ([data] teacher is the model fine-tuned; hook and source are not used)
    [variant] VariantConfig: which layers train, objective 'lm' or 'distill', on the corpus or
              on text another model generates from the corpus's opening words
    [train]   VariantTrainConfig: steps, documents per step, lr, evaluation

    kind = "crosscoder"   (a crosscoder on a base model and its variant, seed 003)
    [run] [data] as above, less teacher (data from a paired activation cache only)
    [pair]       PairSpec: base and variant sources, tokenizer check
    [crosscoder] CrosscoderConfig fields (d_in, hook, names, sources and scales are derived)
    [train]      CrosscoderTrainConfig fields

`distillscope train SPEC.toml`, the wizard and a cloned run all go through this one class.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Union

import tomli_w

from core.crosscoder.model import CrosscoderConfig
from core.crosscoder.train import CrosscoderTrainConfig
from core.dictionaries.base import SAEConfig, check_fields, option
from core.dictionaries.train import TrainConfig
from core.errors import DistillscopeError
from core.models import HookPoint
from core.student.model import StudentConfig
from core.student.train import StudentTrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

KINDS = ("sae", "student", "variant", "crosscoder")
# Filled from the teacher and the data when the job starts, so a spec never states them.
DERIVED_SAE_FIELDS = ("d_in", "hook_name", "model_name", "input_scale")
DERIVED_CROSSCODER_FIELDS = ("d_in", "n_models", "model_names", "model_sources", "hook", "input_scale")
# The model sections of each kind, besides [run], [data] and [train].
MODEL_SECTIONS = {"sae": ("sae",), "student": ("student",), "variant": ("variant",),
                  "crosscoder": ("pair", "crosscoder")}
OBJECTIVES = ("lm", "distill")
VARIANT_TEXTS = ("corpus", "generated")
TOKENIZER_CHECKS = ("strict", "content")  # core.pairs.TOKENIZER_CHECKS


class SpecError(DistillscopeError):
    """A job spec is malformed or has a value out of range."""


@dataclass
class DataSpec:
    """Where the training activations come from."""

    teacher: str = option("bundled", help="The model to read: 'bundled' (Gemma 3 270M, shipped "
                          "with the app), a Hugging Face model folder or a .gguf file.")
    corpus: str = option("demo", help="The documents: 'demo' (945 labelled fortunes), "
                         "'demo-large' (13,698 fortunes), 'demo-mixed' (those and 1,200 "
                         "machine texts), 'demo-provenance', 'demo-ood', or a "
                         "file or folder of .txt .md .jsonl .csv .tsv files.")
    hook: str = option("resid_post.6", help="Hook point: resid_post, mlp_in or mlp_out, a dot, "
                       "and the decoder block index (0-based), e.g. resid_post.6.")
    max_length: int = option(256, help="Tokens read per document; longer ones are cut.",
                             min=2, max=32768, unit="tokens")
    source: str = option("cache", help="cache: extract every token's activation once into a "
                         "cache on disk (reused by later runs with the same data); stream: run "
                         "the teacher during training and keep nothing on disk.",
                         choices=("cache", "stream"))
    batch_tokens: int = option(4096, help="Padded tokens per teacher forward pass while "
                               "extracting or streaming; lower it if memory is short.",
                               min=64, max=1_000_000, unit="tokens")
    device: str = option("auto", help="Where to train and run the teacher: auto picks a GPU "
                         "when there is one.", choices=("auto", "cpu", "cuda", "mps"))
    precision: str = option("exact", help="How the teacher computes while extracting or "
                            "streaming: exact (its own dtype) or fast (bfloat16 weights on CPUs "
                            "with AMX: about 3x faster on this project's CPU, activations within "
                            "0.4%; the same as exact elsewhere). A cache is kept per precision.",
                            choices=("exact", "fast"))

    def validate(self) -> None:
        check_fields(self)
        for name in ("teacher", "corpus"):
            if not getattr(self, name).strip():
                raise ValueError(f"'{name}' must not be empty ({DataSpec.__dataclass_fields__[name].metadata['help']})")
        try:
            HookPoint.parse(self.hook)
        except ValueError as exc:
            raise ValueError(f"'hook': {exc}")


@dataclass
class RunSpec:
    """How the run is kept and evaluated."""

    name: str = option("", help="A name for the runs list and the run folder. Empty: made from "
                       "the architecture, width and hook.")
    checkpoint_every: int = option(100, help="Steps between checkpoints (one is also written on "
                                   "cancel and at the end).", min=1, unit="steps")
    keep_checkpoints: int = option(2, help="Newest checkpoints kept; older ones are deleted.",
                                   min=1, max=100)
    eval_fraction: float = option(0.1, help="Share of the documents held out of training (chosen "
                                  "by a hash of their ids) for the final evaluation.",
                                  min=0.0, max=0.5)
    eval_tokens: int = option(20_000, help="Most held-out tokens used for the final explained "
                              "variance, L0 and feature-frequency histogram.", min=1, unit="tokens")
    loss_recovered_docs: int = option(32, help="Documents for the final loss-recovered "
                                      "evaluation (teacher cross-entropy with the reconstruction "
                                      "spliced in). 0 skips it.", min=0, max=100_000)


def parse_layers(text: str, n_layers: Optional[int] = None) -> list[int]:
    """Decoder block indices from '3-6', '2, 5, 7', '0-2, 8' or 'all' (which needs n_layers),
    sorted and unique. Raises ValueError naming 'layers'."""
    text = str(text).strip().lower()
    if text == "all":
        if n_layers is None:
            return []
        return list(range(n_layers))
    out: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        found = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not found:
            raise ValueError(f"'layers': '{part}' is not a block index or a range like 3-6 "
                             "(write e.g. '3-6', '2, 5, 7' or 'all').")
        lo = int(found.group(1))
        hi = int(found.group(2)) if found.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"'layers': the range '{part}' runs backwards; write {hi}-{lo}.")
        out.update(range(lo, hi + 1))
    if not out:
        raise ValueError("'layers' names no block; write e.g. '3-6', '2, 5, 7' or 'all'.")
    if n_layers is not None and max(out) >= n_layers:
        raise ValueError(f"'layers': block {max(out)} does not exist; the model has blocks 0 to "
                         f"{n_layers - 1}.")
    return sorted(out)


@dataclass
class VariantConfig:
    """What a variant job fine-tunes, and towards what."""

    layers: str = option("3-6", help="Decoder blocks that train (0-based): a range '3-6', a list "
                         "'2, 5, 7' or 'all'. Everything else stays frozen: the embedding (which the "
                         "output head shares), the other blocks and the final norm. Include the "
                         "block a crosscoder will read, or one before it, so the pair differs there.")
    objective: str = option("lm", help="lm: next-token loss on the corpus (the variant takes on the "
                            "corpus's style). distill: KL divergence to the next-token distributions "
                            "of the model in distill_from (the variant moves towards that model on "
                            "the corpus).", choices=OBJECTIVES)
    distill_from: str = option("", help="objective 'distill': the model to learn from: 'bundled', a "
                               "Hugging Face folder or a .gguf file sharing the teacher's tokenizer. "
                               "Its whole forward pass runs on every batch (about 1.4x the time of "
                               "a step).")
    temperature: float = option(1.0, help="objective 'distill': softmax temperature of both models' "
                                "distributions; the loss is scaled by its square.", min=0.05, max=100.0)
    text: str = option("corpus", help="What the variant reads. corpus: the documents as they are. "
                       "generated: text written by another model (sequence-level distillation): "
                       "before training, the generator continues the opening words of each training "
                       "document it needs (and of the held-out documents evaluated), and the variant "
                       "trains on those texts. They are kept in the run folder (generated/corpus.jsonl); "
                       "a resumed run continues or reuses them.", choices=VARIANT_TEXTS)
    generator: str = option("", help="text 'generated': the model that writes the text: 'bundled', a "
                            "Hugging Face folder or a .gguf file sharing the teacher's tokenizer. Empty: "
                            "the model in distill_from.")
    prompt_words: int = option(7, help="text 'generated': opening words of a document given to the "
                               "generator to continue.", min=1, max=1000, unit="words")
    max_new_tokens: int = option(96, help="text 'generated': most tokens the generator writes per "
                                 "document (it may stop sooner at its end-of-text token). Sampled with "
                                 "top-k 50, temperature 0.8, top-p 0.95, seeded by [train] seed.",
                                 min=1, max=32768, unit="tokens")
    generated_documents: int = option(0, help="text 'generated': training documents to write text "
                                      "for (a seeded choice). 0: as many as training reads once "
                                      "(total_steps x batch_size), at most all of them.",
                                      min=0, unit="documents")

    def validate(self) -> "VariantConfig":
        check_fields(self)
        parse_layers(self.layers)
        if self.objective == "distill" and not self.distill_from.strip():
            raise ValueError("'distill_from' must name a model when objective = 'distill'.")
        if self.text == "generated" and not self.generator_source():
            raise ValueError("'generator' must name the model that writes the text when text = "
                             "'generated' (or set distill_from, which it then defaults to).")
        return self

    def generator_source(self) -> str:
        """The model that writes the text of text = 'generated': generator, else distill_from."""
        return self.generator.strip() or self.distill_from.strip()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class VariantTrainConfig:
    """How a variant is fine-tuned. Every field is documented."""

    total_steps: int = option(60, help="Optimizer steps.", min=1, unit="steps")
    batch_size: int = option(4, help="Documents per step, each up to [data] max_length tokens.",
                             min=1, max=4096, unit="documents")
    lr: float = option(1e-4, help="Peak AdamW learning rate.", min=1e-8, max=1.0)
    warmup_steps: int = option(5, help="Steps over which the learning rate rises linearly to lr.",
                               min=0, unit="steps")
    decay_start: float = option(0.8, help="Fraction of training after which the learning rate falls "
                                "linearly to zero at the end. 1.0: no decay.", min=0.0, max=1.0)
    weight_decay: float = option(0.0, help="AdamW weight decay of the trained blocks.", min=0.0, max=1.0)
    grad_clip: float = option(1.0, help="Clip the gradient norm to this. 0: no clipping.", min=0.0)
    eval_every: int = option(20, help="Steps between evaluations of the loss on held-out documents "
                             "(also before the first step and at the end).", min=1, unit="steps")
    eval_documents: int = option(32, help="Held-out documents per evaluation.", min=1, max=100_000,
                                 unit="documents")
    log_every: int = option(1, help="Steps between metric rows.", min=1, unit="steps")
    seed: int = option(0, help="Seed of the document order.", min=0)

    def validate(self) -> "VariantTrainConfig":
        check_fields(self)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class PairSpec:
    """The two models a crosscoder reads."""

    base: str = option("bundled", help="The base model: 'bundled' (Gemma 3 270M), a Hugging Face "
                       "model folder or a .gguf file.")
    variant: str = option("run:variant-demo", help="Its variant, sharing the tokenizer: a Hugging Face folder (a "
                          "variant job writes one to its run's artifacts/variant), a .gguf file, or "
                          "run:NAME, the variant of the newest finished variant run of that name or "
                          "id (e.g. run:variant-demo).")
    tokenizer_check: str = option("strict", help="strict: vocabulary size, BOS/EOS/PAD ids and the "
                                  "tokens of probe strings must be the same. content: only the "
                                  "regular tokens (for pairs whose special tokens were redefined); "
                                  "both models read the base tokenizer's ids.",
                                  choices=TOKENIZER_CHECKS)

    def validate(self) -> "PairSpec":
        check_fields(self)
        for name in ("base", "variant"):
            if not getattr(self, name).strip():
                raise ValueError(f"'{name}' must name a model ({PairSpec.__dataclass_fields__[name].metadata['help']})")
        return self


def _default_sae() -> dict:
    return {"architecture": "topk", "d_sae": 4096, "k": 32}


def _default_crosscoder() -> dict:
    return {"architecture": "batchtopk", "d_latent": 4096, "k": 32}


def _default_crosscoder_train() -> CrosscoderTrainConfig:
    return CrosscoderTrainConfig(total_steps=1000, batch_size=1024, warmup_steps=20)


def _default_train() -> TrainConfig:
    return TrainConfig(batch_size=1024, total_tokens=300_000, warmup_steps=20, log_every=5)


@dataclass
class JobSpec:
    """A whole job: what to train, on what, and how the run is kept."""

    kind: str = "sae"
    run: RunSpec = field(default_factory=RunSpec)
    data: DataSpec = field(default_factory=DataSpec)
    sae: dict = field(default_factory=_default_sae)  # SAEConfig fields, less DERIVED_SAE_FIELDS
    train: Union[TrainConfig, StudentTrainConfig, VariantTrainConfig, CrosscoderTrainConfig] = \
        field(default_factory=_default_train)
    student: StudentConfig = field(default_factory=StudentConfig)  # kind "student" only
    variant: VariantConfig = field(default_factory=VariantConfig)  # kind "variant" only
    pair: PairSpec = field(default_factory=PairSpec)  # kind "crosscoder" only
    crosscoder: dict = field(default_factory=_default_crosscoder)  # CrosscoderConfig fields, less derived

    @classmethod
    def for_kind(cls, kind: str) -> "JobSpec":
        """The default spec of a kind (its own [train] settings). A student starts from the demo
        student's recipe (examples/student-demo.toml, measured in the README), not from the
        seed's bare settings: token targets on the large demo corpus with machine text, causal
        attention, bfloat16 on AMX CPUs."""
        spec = cls(kind=kind)  # __post_init__ gives a student its own [train] defaults
        if kind == "student":
            spec.data.corpus, spec.data.precision = "demo-mixed", "fast"
            spec.run.eval_fraction, spec.run.checkpoint_every = 0.08, 200
            spec.student.target, spec.student.attention = "tokens", "causal"
            for key, value in dict(batch_size=32, lr=3e-3, epochs=5, eval_every=200,
                                   precision="fast").items():
                setattr(spec.train, key, value)
        return spec

    def __post_init__(self):
        if isinstance(self.train, TrainConfig) and self.kind != "sae":
            # JobSpec(kind=...) gets that kind's own [train] defaults
            self.train = {"student": StudentTrainConfig, "variant": VariantTrainConfig,
                          "crosscoder": _default_crosscoder_train}[self.kind]()
        # Every SAE (crosscoder) setting is spelled out, so a saved spec documents itself and
        # compares equal to the same spec written with fewer keys.
        defaults = {f.name: f.default for f in fields(SAEConfig)
                    if f.name not in DERIVED_SAE_FIELDS and f.default is not dataclasses.MISSING}
        self.sae = {**defaults, **_default_sae(), **self.sae}
        defaults = {f.name: f.default for f in fields(CrosscoderConfig)
                    if f.name not in DERIVED_CROSSCODER_FIELDS and f.default is not dataclasses.MISSING}
        self.crosscoder = {**defaults, **_default_crosscoder(), **self.crosscoder}
        if self.kind == "crosscoder":
            self.data.teacher = self.pair.base  # one source of truth: [pair] base

    def sae_config(self, d_in: int, hook_name: str = "", model_name: str = "") -> SAEConfig:
        return SAEConfig(d_in=d_in, hook_name=hook_name, model_name=model_name, **self.sae)

    def crosscoder_config(self, d_in: int, sources: tuple[str, str] = ("", "")) -> CrosscoderConfig:
        """The crosscoder of a 'crosscoder' job: [crosscoder] plus what the pair and hook give."""
        return CrosscoderConfig(d_in=d_in, n_models=2, model_names=["base", "variant"],
                                model_sources=list(sources), hook=self.data.hook, **self.crosscoder)

    def display_name(self) -> str:
        if self.run.name:
            return self.run.name
        if self.kind == "student":
            s = self.student
            return f"student-{s.n_layers}x{s.d_hidden}-{self.data.hook}"
        if self.kind == "variant":
            generated = "-generated" if self.variant.text == "generated" else ""
            return f"variant-{self.variant.objective}{generated}-layers-{self.variant.layers.replace(' ', '')}"
        if self.kind == "crosscoder":
            c = self.crosscoder
            return f"crosscoder-{c.get('architecture', 'batchtopk')}-{c.get('d_latent', '?')}-{self.data.hook}"
        return f"{self.sae.get('architecture', 'topk')}-{self.sae.get('d_sae', '?')}-{self.data.hook}"

    def validate(self) -> "JobSpec":
        """Raise SpecError naming the section and setting that is wrong."""
        if self.kind not in KINDS:
            raise SpecError(f"Job kind '{self.kind}' is unknown.", f"Use one of: {', '.join(KINDS)}.")
        if not isinstance(self.train, _train_class(self.kind)):
            raise SpecError(f"[train] holds {type(self.train).__name__} settings, but a "
                            f"'{self.kind}' job needs {_train_class(self.kind).__name__}.",
                            "Start from JobSpec.for_kind(kind).")
        if self.kind == "crosscoder":
            self.data.teacher = self.pair.base
        models = {"sae": [("sae", lambda: self.sae_config(d_in=1).validate())],
                  "student": [("student", self._validate_student)],
                  "variant": [("variant", self.variant.validate)],
                  "crosscoder": [("pair", self.pair.validate), ("crosscoder", self._validate_crosscoder)],
                  }[self.kind]
        for section, check in (("run", lambda: check_fields(self.run)),
                               ("data", self.data.validate), *models,
                               ("train", self.train.validate)):
            try:
                check()
            except (ValueError, TypeError) as exc:
                raise SpecError(f"[{section}] {exc}", "Correct the setting and try again.")
        return self

    def _validate_student(self) -> None:
        self.student.validate()
        if self.data.source != "cache":
            raise ValueError("a student trains on an activation cache: set [data] source = 'cache'.")
        if self.data.max_length > self.student.max_positions:
            raise ValueError(f"'max_positions' ({self.student.max_positions}) must be at least "
                             f"[data] max_length ({self.data.max_length}).")

    def _validate_crosscoder(self) -> None:
        unknown = sorted(set(self.crosscoder) - {f.name for f in fields(CrosscoderConfig)})
        if unknown:
            raise ValueError(f"unknown setting '{unknown[0]}'.")
        derived = sorted(set(self.crosscoder) & set(DERIVED_CROSSCODER_FIELDS))
        if derived:
            raise ValueError(f"'{derived[0]}' comes from the models and the hook; leave it out.")
        self.crosscoder_config(d_in=1).validate()
        if self.data.source != "cache":
            raise ValueError("a crosscoder trains on a paired activation cache: set [data] source = 'cache'.")

    # -- TOML ------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Plain data for TOML: None (an 'automatic' setting) is left out, as TOML has no null.
        Only the model section of the spec's kind is written."""
        def clean(d: dict) -> dict:
            return {k: v for k, v in d.items() if v is not None}
        sections = {"sae": lambda: clean(dict(self.sae)), "student": lambda: clean(self.student.to_dict()),
                    "variant": lambda: clean(self.variant.to_dict()),
                    "pair": lambda: clean(dataclasses.asdict(self.pair)),
                    "crosscoder": lambda: clean(dict(self.crosscoder))}
        data = clean(dataclasses.asdict(self.data))
        if self.kind == "crosscoder":
            data.pop("teacher")  # [pair] base is the teacher
        out = {"kind": self.kind, "run": clean(dataclasses.asdict(self.run)), "data": data}
        out.update({name: sections[name]() for name in MODEL_SECTIONS[self.kind]})
        out["train"] = clean(self.train.to_dict())
        return out

    def to_toml(self) -> str:
        header = ("# distillscope job spec. Run it with: distillscope train THIS_FILE\n"
                  "# Every setting is described by: distillscope train --describe\n")
        return header + tomli_w.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict) -> "JobSpec":
        data = dict(data)
        kind = data.get("kind", "sae")
        if kind not in KINDS:
            raise SpecError(f"Job kind '{kind}' is unknown.", f"Use one of: {', '.join(KINDS)}.")
        known = {"kind", "run", "data", "train", *MODEL_SECTIONS[kind]}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"Unknown section or setting '{unknown[0]}' in the spec.",
                            f"Known for kind '{kind}': {', '.join(sorted(known))}.")
        sae = _section(data, "sae", SAEConfig, exclude=DERIVED_SAE_FIELDS)
        crosscoder = _section(data, "crosscoder", CrosscoderConfig, exclude=DERIVED_CROSSCODER_FIELDS)
        data_section = dict(_section(data, "data", DataSpec))
        pair = dict(_section(data, "pair", PairSpec))
        if kind == "crosscoder" and "teacher" in data_section:
            teacher = data_section.pop("teacher")
            if pair.setdefault("base", teacher) != teacher:
                raise SpecError(f"[data] teacher ('{teacher}') and [pair] base ('{pair['base']}') differ.",
                                "A crosscoder's base model is [pair] base; leave [data] teacher out.")
        train_cls = _train_class(kind)
        try:
            spec = cls(kind=kind,
                       run=RunSpec(**_section(data, "run", RunSpec)),
                       data=DataSpec(**data_section),
                       sae={**_default_sae(), **sae},
                       train=train_cls(**_section(data, "train", train_cls)),
                       student=StudentConfig(**_section(data, "student", StudentConfig)),
                       variant=VariantConfig(**_section(data, "variant", VariantConfig)),
                       pair=PairSpec(**pair),
                       crosscoder={**_default_crosscoder(), **crosscoder})
        except TypeError as exc:
            raise SpecError(f"The spec is malformed ({exc}).", "See distillscope train --describe.")
        return spec.validate()

    @classmethod
    def from_toml(cls, text: str) -> "JobSpec":
        try:
            return cls.from_dict(tomllib.loads(text))
        except tomllib.TOMLDecodeError as exc:
            raise SpecError(f"The spec is not valid TOML ({exc}).",
                            "Check the line it names; strings need quotes.")

    @classmethod
    def from_toml_file(cls, path: str | Path) -> "JobSpec":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SpecError(f"Spec file '{path}' does not exist.", "Check the path.")
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError(f"Spec file '{path}' cannot be read ({exc}).", "Save it as UTF-8 text.")
        return cls.from_toml(text)


def _section(data: dict, name: str, config_cls, exclude: tuple = ()) -> dict[str, Any]:
    section = data.get(name, {})
    if not isinstance(section, dict):
        raise SpecError(f"'{name}' must be a table ([{name}]).", "See distillscope train --describe.")
    names = {f.name for f in fields(config_cls)} - set(exclude)
    unknown = sorted(set(section) - names)
    if unknown:
        raise SpecError(f"Unknown setting '{unknown[0]}' in [{name}].",
                        f"Known settings: {', '.join(sorted(names))}.")
    return section


def _train_class(kind: str):
    return {"student": StudentTrainConfig, "variant": VariantTrainConfig,
            "crosscoder": CrosscoderTrainConfig}.get(kind, TrainConfig)


def describe_spec(kind: str = "sae") -> dict[str, list[dict]]:
    """Each section's documented fields (name, type, default, help, min, max, choices, unit)."""
    from core.dictionaries.base import describe

    if kind == "student":
        return {"run": describe(RunSpec), "data": describe(DataSpec),
                "student": describe(StudentConfig), "train": describe(StudentTrainConfig)}
    if kind == "variant":
        return {"run": describe(RunSpec), "data": describe(DataSpec),
                "variant": describe(VariantConfig), "train": describe(VariantTrainConfig)}
    if kind == "crosscoder":
        return {"run": describe(RunSpec), "data": [d for d in describe(DataSpec) if d["name"] != "teacher"],
                "pair": describe(PairSpec),
                "crosscoder": [d for d in describe(CrosscoderConfig) if d["name"] not in DERIVED_CROSSCODER_FIELDS],
                "train": describe(CrosscoderTrainConfig)}
    return {"run": describe(RunSpec), "data": describe(DataSpec),
            "sae": [d for d in describe(SAEConfig) if d["name"] not in DERIVED_SAE_FIELDS],
            "train": describe(TrainConfig)}
