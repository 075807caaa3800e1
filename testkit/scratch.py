"""Scratch directories for the benchmarks: removed after, images kept on ask.

A benchmark builds its images once with ``--keep DIR`` and reuses them on
the next run; everything else it writes goes to a directory removed when
it ends, however it ends.
"""

import contextlib
import os
import shutil
import tempfile


@contextlib.contextmanager
def scratch(prefix, keep=None):
    """Yield ``(work, images)``: a scratch directory and where images go.

    ``images`` is *keep* when given (made if missing, never removed), else
    a directory inside ``work``; ``work`` is removed when the block ends.
    """
    work = tempfile.mkdtemp(prefix=prefix)
    images = keep or os.path.join(work, 'images')
    os.makedirs(images, exist_ok=True)
    try:
        yield work, images
    finally:
        shutil.rmtree(work, ignore_errors=True)
