"""Where a Deep Lake dataset lives: the ``deeplake:<folder>`` config URL, and the retired hub.

Kept apart from :mod:`deeplake_io` (and free of heavy imports) because the workflow parses
every mouse's URL when it builds the DAG.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import PathError

#: Config ``url`` prefix of a mouse whose store is ingested from a Deep Lake dataset.
URL_PREFIX = "deeplake:"
#: Schemes of the Deep Lake v3 hub, where the 2023 datasets were published.
_RETIRED = ("hub://", "al://")


class DeepLakeError(PathError):
    """A Deep Lake dataset is unreadable, of the retired v3 kind, or not laid out as expected."""


def is_deeplake_url(url: str) -> bool:
    """Whether a config ``url`` names a Deep Lake dataset (``deeplake:<path>``)."""
    return isinstance(url, str) and url.startswith(URL_PREFIX)


def is_retired_url(url: str) -> bool:
    """Whether ``url`` (with or without the ``deeplake:`` prefix) is a Deep Lake v3 hub URL."""
    if not isinstance(url, str):
        return False
    bare = url[len(URL_PREFIX) :] if is_deeplake_url(url) else url
    return bare.lower().startswith(_RETIRED)


def retired_error(url: str) -> DeepLakeError:
    return DeepLakeError(
        url,
        "the SENSORIUM 2023 Deep Lake datasets (hub://sinzlab/...) were written with the retired "
        "Deep Lake v3 API, which deeplake 4 cannot read. Download the official zip archives instead "
        "(the https://gin.g-node.org/pollytur/... URLs in config/sensorium2023.yaml), or convert the "
        "dataset with deeplake 3 first (pip install 'deeplake<4') into a local Deep Lake 4 folder laid "
        "out as sensorium_pipeline.data.deeplake_io describes, and give it as url: 'deeplake:<folder>'",
    )


def dataset_path(url: str | Path) -> Path:
    """The local folder behind ``deeplake:<path>``, ``deeplake:file:///<path>`` or a plain path."""
    text = str(url)
    if is_retired_url(text):
        raise retired_error(text)
    bare = text[len(URL_PREFIX) :] if is_deeplake_url(text) else text
    bare = bare.removeprefix("file://")
    if not bare or "://" in bare:
        raise DeepLakeError(text, "expected deeplake:<local folder> (Deep Lake works offline on local folders only)")
    return Path(bare)
