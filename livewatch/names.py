"""The camera-name rule, in one place: the config file, the command line and the protocol all use it.

Names become directory names in the state directory, metric labels and MQTT topic parts, so they are short and
plain. Python checks use ``re.fullmatch`` (``re.match`` with ``$`` would accept a trailing newline); the anchored
form is for pydantic, whose Rust regex engine searches.
"""

from __future__ import annotations

import re

CAMERA_NAME_BODY = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
CAMERA_NAME_RE = rf"^{CAMERA_NAME_BODY}$"
CAMERA_NAME_RULE = "camera names are 1-64 letters, digits, '_', '.', '-' and start with a letter or digit"
_NAME = re.compile(CAMERA_NAME_BODY)


def is_camera_name(value: str) -> bool:
    return _NAME.fullmatch(value) is not None
