"""A playground setup as a link: what the page's address holds after ``#setup=``, written and read in Python.

The page (``static/app.js``) keeps its whole setup in the address, so a link restores it::

    http://127.0.0.1:8765/#setup=<base64url of the setup's JSON, UTF-8, without padding>

with the setup ``{"landscape": "quadratic", "params": {"condition": 20}, "start": [x, y], "steps": 300,
"seed": 0, "runs": [{"optimizer": "SGD", "hyperparameters": {"lr": 0.1}, "batch": null}, ...]}`` (``params``
are the landscape's knobs, ``runs`` entries of ``api.optimizer_catalog()``; ``preset`` may name one of the
page's presets). The lab's report writes such links beside its landscape figures ("open in the
playground"); ``descend playground --port 8765`` serves the page at the address they assume.
"""
from __future__ import annotations

import base64
import json
from typing import Any

PORT = 8765  # the port the report's links assume when it is opened from a file
ADDRESS = f"http://127.0.0.1:{PORT}/"
FIELDS = ("landscape", "params", "start", "steps", "seed", "runs", "preset")


def encode_setup(setup: dict[str, Any]) -> str:
    """The text after ``#setup=``: the setup as compact JSON (UTF-8), in base64url without padding."""
    unknown = sorted(set(setup) - set(FIELDS))
    if unknown:
        raise ValueError(f"a playground setup has no field {', '.join(unknown)}; its fields are {', '.join(FIELDS)}")
    text = json.dumps(setup, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def decode_setup(text: str) -> dict[str, Any]:
    """The setup a ``#setup=`` text holds (a ValueError when it holds none)."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        setup = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"not a playground setup: {error}") from None
    if not isinstance(setup, dict) or not isinstance(setup.get("landscape"), str) \
            or not isinstance(setup.get("runs"), list):
        raise ValueError("not a playground setup: it needs a landscape and a list of runs")
    return setup


def setup_url(setup: dict[str, Any], address: str = ADDRESS) -> str:
    """The link that opens the playground at ``address`` with ``setup``; ``address=""`` gives ``#setup=…``."""
    return f"{address}#setup={encode_setup(setup)}"


def setup_from_url(url: str) -> dict[str, Any]:
    """The setup a playground link holds."""
    _, found, text = url.partition("#setup=")
    if not found:
        raise ValueError(f"no #setup= in {url!r}")
    return decode_setup(text.split("&")[0])
