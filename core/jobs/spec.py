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

`distillscope train SPEC.toml`, the wizard and a cloned run all go through this one class.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Union

import tomli_w

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

KINDS = ("sae", "student")
# Filled from the teacher and the data when the job starts, so a spec never states them.
DERIVED_SAE_FIELDS = ("d_in", "hook_name", "model_name", "input_scale")


class SpecError(DistillscopeError):
    """A job spec is malformed or has a value out of range."""


@dataclass
class DataSpec:
    """Where the training activations come from."""

    teacher: str = option("bundled", help="The model to read: 'bundled' (Gemma 3 270M, shipped "
                          "with the app), a Hugging Face model folder or a .gguf file.")
    corpus: str = option("demo", help="The documents: 'demo' (945 labelled fortunes), "
                         "'demo-large' (13,698 fortunes), 'demo-provenance', 'demo-ood', or a "
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
                            "streaming: exact (its own dtype) or fast (bfloat16 autocast on CPUs "
                            "with AMX: about 2x faster on this project's CPU, activations within "
                            "0.35%; the same as exact elsewhere). A cache is kept per precision.",
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


def _default_sae() -> dict:
    return {"architecture": "topk", "d_sae": 4096, "k": 32}


def _default_train() -> TrainConfig:
    return TrainConfig(batch_size=1024, total_tokens=300_000, warmup_steps=20, log_every=5)


@dataclass
class JobSpec:
    """A whole job: what to train, on what, and how the run is kept."""

    kind: str = "sae"
    run: RunSpec = field(default_factory=RunSpec)
    data: DataSpec = field(default_factory=DataSpec)
    sae: dict = field(default_factory=_default_sae)  # SAEConfig fields, less DERIVED_SAE_FIELDS
    train: Union[TrainConfig, StudentTrainConfig] = field(default_factory=_default_train)
    student: StudentConfig = field(default_factory=StudentConfig)  # kind "student" only

    @classmethod
    def for_kind(cls, kind: str) -> "JobSpec":
        """The default spec of a kind (its own [train] settings)."""
        return cls(kind=kind)  # __post_init__ gives a student its own [train] defaults

    def __post_init__(self):
        if self.kind == "student" and isinstance(self.train, TrainConfig):
            self.train = StudentTrainConfig()  # JobSpec(kind="student") gets the student's defaults
        # Every SAE setting is spelled out, so a saved spec documents itself and compares equal
        # to the same spec written with fewer keys.
        defaults = {f.name: f.default for f in fields(SAEConfig)
                    if f.name not in DERIVED_SAE_FIELDS and f.default is not dataclasses.MISSING}
        self.sae = {**defaults, **_default_sae(), **self.sae}

    def sae_config(self, d_in: int, hook_name: str = "", model_name: str = "") -> SAEConfig:
        return SAEConfig(d_in=d_in, hook_name=hook_name, model_name=model_name, **self.sae)

    def display_name(self) -> str:
        if self.run.name:
            return self.run.name
        if self.kind == "student":
            s = self.student
            return f"student-{s.n_layers}x{s.d_hidden}-{self.data.hook}"
        return f"{self.sae.get('architecture', 'topk')}-{self.sae.get('d_sae', '?')}-{self.data.hook}"

    def validate(self) -> "JobSpec":
        """Raise SpecError naming the section and setting that is wrong."""
        if self.kind not in KINDS:
            raise SpecError(f"Job kind '{self.kind}' is unknown.", f"Use one of: {', '.join(KINDS)}.")
        if not isinstance(self.train, _train_class(self.kind)):
            raise SpecError(f"[train] holds {type(self.train).__name__} settings, but a "
                            f"'{self.kind}' job needs {_train_class(self.kind).__name__}.",
                            "Start from JobSpec.for_kind(kind).")
        model = ("sae", lambda: self.sae_config(d_in=1).validate())
        if self.kind == "student":
            model = ("student", self._validate_student)
        for section, check in (("run", lambda: check_fields(self.run)),
                               ("data", self.data.validate), model,
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

    # -- TOML ------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Plain data for TOML: None (an 'automatic' setting) is left out, as TOML has no null.
        Only the model section of the spec's kind is written."""
        def clean(d: dict) -> dict:
            return {k: v for k, v in d.items() if v is not None}
        model = (("student", clean(self.student.to_dict())) if self.kind == "student"
                 else ("sae", clean(dict(self.sae))))
        return {"kind": self.kind, "run": clean(dataclasses.asdict(self.run)),
                "data": clean(dataclasses.asdict(self.data)), model[0]: model[1],
                "train": clean(self.train.to_dict())}

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
        known = {"kind", "run", "data", "train", "student" if kind == "student" else "sae"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"Unknown section or setting '{unknown[0]}' in the spec.",
                            f"Known for kind '{kind}': {', '.join(sorted(known))}.")
        sae = _section(data, "sae", SAEConfig, exclude=DERIVED_SAE_FIELDS)
        train_cls = _train_class(kind)
        try:
            spec = cls(kind=kind,
                       run=RunSpec(**_section(data, "run", RunSpec)),
                       data=DataSpec(**_section(data, "data", DataSpec)),
                       sae={**_default_sae(), **sae},
                       train=train_cls(**_section(data, "train", train_cls)),
                       student=StudentConfig(**_section(data, "student", StudentConfig)))
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
    return StudentTrainConfig if kind == "student" else TrainConfig


def describe_spec(kind: str = "sae") -> dict[str, list[dict]]:
    """Each section's documented fields (name, type, default, help, min, max, choices, unit)."""
    from core.dictionaries.base import describe

    if kind == "student":
        return {"run": describe(RunSpec), "data": describe(DataSpec),
                "student": describe(StudentConfig), "train": describe(StudentTrainConfig)}
    return {"run": describe(RunSpec), "data": describe(DataSpec),
            "sae": [d for d in describe(SAEConfig) if d["name"] not in DERIVED_SAE_FIELDS],
            "train": describe(TrainConfig)}
