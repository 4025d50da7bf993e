"""Import TensorFlow without its start-up noise on the terminal.

TensorFlow's native libraries log through absl before anything can configure it, so ``TF_CPP_MIN_LOG_LEVEL``
does not reach the first lines: "WARNING: All log messages before absl::InitializeLog() ...", the oneDNN notice,
"Could not find cuda drivers ...", and, when the CUDA platform is probed, "failed call to cuInit". On a machine
without a GPU every command would start with them. :func:`import_tensorflow` imports TensorFlow and probes its
devices (where those lines come from) with the process's native stderr (file descriptor 2) sent to a temporary
file, then writes back every native line that is not such noise. Python's own output (warnings, tracebacks) goes
straight to the terminal meanwhile; after the import, stderr is untouched.

Set ``TF_CPP_MIN_LOG_LEVEL`` to 0 or 1 to see everything (nothing is filtered then).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator

ENV_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
DEFAULT_LOG_LEVEL = "2"  # hide TensorFlow's C++ INFO and WARNING lines; errors still show

# A native log line: severity letter, MMDD, time, thread id, file:line] (absl and glog format).
_NATIVE_LINE = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ \S+:\d+\] ")
_NATIVE_INFO = re.compile(r"^[IW]\d{4} ")
_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
# Errors that only say there is no GPU (or that a CUDA plugin was registered twice): not the user's problem.
_CUDA_PROBING = re.compile(r"cuInit|Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered")


def set_default_log_level() -> None:
    """TF_CPP_MIN_LOG_LEVEL=2 unless the user set it: TensorFlow's C++ INFO and WARNING lines are hidden."""
    os.environ.setdefault(ENV_LOG_LEVEL, DEFAULT_LOG_LEVEL)


def filtering() -> bool:
    """Whether start-up noise is filtered: TF_CPP_MIN_LOG_LEVEL unset or 2 and above (0 or 1: show everything)."""
    level = os.environ.get(ENV_LOG_LEVEL, DEFAULT_LOG_LEVEL).strip()
    return not level.isdigit() or int(level) >= 2


def is_noise(line: str) -> bool:
    """A native start-up line that says nothing the user can act on (see the module docstring)."""
    text = line.rstrip("\r\n")
    if text == _ABSL_PREAMBLE or (_NATIVE_LINE.match(text) and _NATIVE_INFO.match(text)):
        return True
    return bool(_NATIVE_LINE.match(text) and _CUDA_PROBING.search(text))


def filter_noise(lines: Iterable[str]) -> list[str]:
    """`lines` without the noise, and without the continuation lines of a noise record (lines that do not start
    a new native record, such as the second line of the CPU-instructions notice)."""
    kept: list[str] = []
    dropping = False
    for line in lines:
        starts_record = bool(_NATIVE_LINE.match(line)) or line.startswith("WARNING: All log messages")
        if starts_record:
            dropping = is_noise(line)
        if not dropping:
            kept.append(line)
    return kept


def import_tensorflow() -> None:
    """Import TensorFlow and probe its devices, with the start-up noise left out of stderr (see the module
    docstring). Does nothing more than an import when TensorFlow is already imported or filtering is off."""
    set_default_log_level()
    if "tensorflow" in sys.modules or not filtering():
        import tensorflow  # noqa: F401

        return
    sys.stdout.flush()
    sys.stderr.flush()
    python_stderr = sys.stderr
    with tempfile.TemporaryFile() as capture:
        saved = os.dup(2)
        try:
            # Python's writes (warnings, tracebacks) go to the real stderr meanwhile, not into the capture.
            with open(saved, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False) as real:
                sys.stderr = real
                os.dup2(capture.fileno(), 2)
                try:
                    import tensorflow as tf

                    tf.config.list_physical_devices()  # the CUDA platform is probed here (cuInit)
                finally:
                    os.dup2(saved, 2)
                    sys.stderr = python_stderr
                    # TensorFlow's logger made its handler on the stderr of the moment, which closes below.
                    for handler in logging.getLogger("tensorflow").handlers:
                        if isinstance(handler, logging.StreamHandler) and handler.stream is real:
                            handler.setStream(python_stderr)
        finally:
            os.close(saved)
            capture.seek(0)
            kept = filter_noise(capture.read().decode("utf-8", errors="backslashreplace").splitlines(keepends=True))
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


_native_lock = threading.RLock()  # re-entrant: a captured block may hold another


@contextlib.contextmanager
def native_stderr_without(pattern: re.Pattern[str]) -> Iterator[None]:
    """Run the block with the process's native stderr (fd 2) captured; afterwards write back every line that does
    not match ``pattern`` (e.g. LiteRT's one-off "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.").
    Serialised by a lock: fd 2 is process-wide."""
    if not filtering():
        yield
        return
    with _native_lock, tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode("utf-8", errors="backslashreplace").splitlines(keepends=True)
            kept = [line for line in lines if not pattern.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
