"""Native libraries' stderr chatter, sent to the log instead of the terminal.

MediaPipe's C++ (absl logging, TFLite's "Created TensorFlow Lite XNNPACK delegate") writes
straight to file descriptor 2 when a graph is built and first run, bypassing Python logging, so
every CLI run and the service's first request printed lines no person needs. While such code runs
we point fd 2 at a temporary file, then log the lines that look like that chatter at DEBUG and
pass every other line back to stderr, so nothing a person must read is lost.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# absl's "W0000 00:00:1796221930.686393   23067 file.cc:114] ..." prefix, and TFLite's INFO lines.
_CHATTER = re.compile(
    r"^(?:[IWEF]\d{4} \d|INFO: Created TensorFlow Lite|WARNING: All log messages before absl)"
)
# fd 2 is process-wide: one capture at a time.
_LOCK = threading.Lock()


@contextmanager
def native_stderr_to_log(log: logging.Logger) -> Iterator[None]:
    with _LOCK, tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines():
                if _CHATTER.match(line):
                    log.debug("native: %s", line)
                elif line.strip():
                    sys.stderr.write(line + "\n")
