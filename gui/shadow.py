"""Two views of one loaded teacher, for two worker threads: extraction and the token view.

The token view must not wait behind a minute-long corpus extraction, so it runs on its own thread.
core.models.capture registers forward hooks on the blocks, and a hook fires for every caller: one
thread's capture would store (or stop) the other's forward pass. So the shadow gets its own module
objects (hence its own hooks) holding the very same parameter and buffer tensors: a deep copy with
the tensors memoized costs ~10 ms and no weight memory. The tokenizer is shared; the Teacher's
own tokenizer lock (shared by the copy) keeps the two threads off it at the same time.
Inference only: nothing writes the shared weights.
"""

from __future__ import annotations

import copy
import dataclasses

from core.models import Teacher


def twins(teacher: Teacher) -> tuple[Teacher, Teacher]:
    """(main, shadow): the same weights, tokenizer and lock; the shadow has its own modules."""
    model = teacher.model
    memo = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    shadow_model = copy.deepcopy(model, memo)
    shadow_model.eval()
    return teacher, dataclasses.replace(teacher, model=shadow_model)


def load_teacher_twins(source, state):
    """Worker-thread task: load a teacher and make its twins (imports torch here, off the GUI)."""
    from core.models import load_teacher

    teacher = load_teacher(source, state=state)
    state.check_cancelled()
    return twins(teacher)
