"""Two views of one loaded teacher, for two worker threads: extraction and the token view.

The token view must not wait behind a minute-long corpus extraction, so it runs on its own thread.
Two things stop two threads from simply sharing one Teacher:
- core.models.capture registers forward hooks on the blocks, and a hook fires for every caller:
  one thread's capture would store (or stop) the other's forward pass. So the shadow gets its own
  module objects (hence its own hooks) that hold the very same parameter and buffer tensors:
  a deep copy with the tensors memoized costs ~10 ms and no weight memory.
- A fast tokenizer is not safe to share: each call sets its truncation length on the Rust backend,
  which fails ("Already borrowed") while another thread is encoding. A copy of Gemma's 262k-token
  tokenizer costs 1-2 s of GIL-holding work and 0.3 GB, so instead both twins share it behind one
  lock: tokenize() holds it, and the token-view task holds it for its whole (short) run.
Inference only: nothing writes the shared weights. (A lock inside core's Teacher.tokenize would
let this module shrink to the module copy.)
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field, fields

from core.models import Teacher


@dataclass
class SharedTokenizerTeacher(Teacher):
    """A Teacher whose tokenize() holds a lock shared with its twin."""

    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    def tokenize(self, texts: list[str], max_length: int) -> list[list[int]]:
        with self.lock:
            return super().tokenize(texts, max_length)


def twins(teacher: Teacher) -> tuple[SharedTokenizerTeacher, SharedTokenizerTeacher]:
    """(main, shadow): the same weights and tokenizer; the shadow has its own module objects."""
    base = {f.name: getattr(teacher, f.name) for f in fields(Teacher)}
    lock = threading.RLock()
    model = teacher.model
    memo = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    shadow_model = copy.deepcopy(model, memo)
    shadow_model.eval()
    main = SharedTokenizerTeacher(**base, lock=lock)
    shadow = SharedTokenizerTeacher(**{**base, "model": shadow_model}, lock=lock)
    return main, shadow


def load_teacher_twins(source, state):
    """Worker-thread task: load a teacher and make its twins (imports torch here, off the GUI)."""
    from core.models import load_teacher

    teacher = load_teacher(source, state=state)
    state.check_cancelled()
    return twins(teacher)


def token_norms_locked(shadow: SharedTokenizerTeacher, text: str, layer: int, state):
    """The token view on the shadow; holds the tokenizer lock for the whole run (it also decodes)."""
    from core.inspect import token_norms

    with shadow.lock:
        return token_norms(shadow, text, layer, state=state)
