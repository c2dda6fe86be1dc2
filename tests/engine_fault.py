"""``livewatch`` with one injected fault, for the test that makes the engine thread die.

Runs the real CLI in this process after wrapping ``EngineCore.set_context``: once the file named by
LIVEWATCH_TEST_ENGINE_FAULT exists, the next context the engine thread applies raises, outside every per-job
guard, so the thread dies the way an unforeseen bug would kill it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from livewatch.cli import main
from livewatch.engine.core import EngineCore

_flag = Path(os.environ["LIVEWATCH_TEST_ENGINE_FAULT"])
_set_context = EngineCore.set_context


def _set_context_or_die(self, *args, **kwargs):  # type: ignore[no-untyped-def]
    if _flag.exists():
        raise RuntimeError("injected engine fault")
    return _set_context(self, *args, **kwargs)


EngineCore.set_context = _set_context_or_die  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
