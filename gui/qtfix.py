"""Work around a reference-counting bug of PySide6 on Python 3.11 and older.

Measured with PySide6 6.12.0 on CPython 3.11.7: every `Signal.emit()` drops one reference to
`True`, and every call of a Python slot from a Qt signal drops one reference to `None`. A few
hundred signals later the interpreter aborts with "Fatal Python error: bool_dealloc" (or
"none_dealloc"). Python 3.12 made these singletons immortal, which hides the bug there.
We do the same on older Pythons: give None, True and False so many references (2**40) that no
session can ever use them up. It only touches three objects that are never freed anyway.
"""

import ctypes
import sys


def immortalize_singletons() -> None:
    if sys.implementation.name != "cpython" or sys.version_info >= (3, 12):
        return
    for obj in (None, True, False):
        # ob_refcnt is the first field of every CPython object (Py_ssize_t).
        ctypes.c_ssize_t.from_address(id(obj)).value += 1 << 40


if not getattr(sys, "_distillscope_singletons_immortal", False):
    immortalize_singletons()
    sys._distillscope_singletons_immortal = True
