"""The Hugging Face hub: can it be used right now? Corpora (``data``) and tasks (``tasks.hub``)
ask before they download, so that offline they fail at once with the local-file alternative.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse

from .errors import one_line


def hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be used right now (offline flag, no connection), or None.

    A quick probe, so that corpora and tasks fail at once: ``load_dataset`` itself would retry
    for ~20 s before giving up.
    """
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"offline ({var}={os.environ[var].strip()})"
    parsed = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    result: list[object] = []

    def probe() -> None:  # in a thread so that a slow DNS lookup is bounded too
        try:
            socket.create_connection((host, port), timeout=3).close()
            result.append(None)
        except OSError as e:
            result.append(e)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(3.5)
    if result and result[0] is None:
        return None
    return f"cannot reach {host}:{port} ({one_line(result[0]) if result else 'timed out'})"
