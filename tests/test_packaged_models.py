"""all-mpnet-base-v2 from the package index: assembled from its five installed parts, loaded offline."""

from __future__ import annotations

import hashlib
import zipfile

import numpy as np
import pytest

from joyful.data.packaged_models import MPNET_ID, assembled_mpnet, mpnet_parts
from joyful.data.text_encoder import TextEncoder

parts = mpnet_parts()
needs_parts = pytest.mark.skipif(parts is None, reason="pip install 'joyful[mpnet]' to test the packaged mpnet")


@needs_parts
def test_the_assembled_model_is_the_zip_the_parts_make_and_encodes_768_d(tmp_path):
    model_dir = assembled_mpnet(tmp_path)
    assert model_dir == tmp_path / "models" / "all-mpnet-base-v2"
    # independent reference: the weights inside the concatenated parts, read with zipfile directly
    joined = tmp_path / "joined.zip"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    with zipfile.ZipFile(joined) as z:
        expected = hashlib.sha256(z.read("all-mpnet-base-v2/model.safetensors")).hexdigest()
    assert hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest() == expected
    assert assembled_mpnet(tmp_path) == model_dir  # built once, then reused

    encoder = TextEncoder("all-mpnet-base-v2", cache_dir=tmp_path, show_progress=False)
    assert encoder.cache_key == MPNET_ID and encoder.dim == 768
    v = encoder.encode(["I am so happy today", "What a joyful day", "The invoice is attached"])
    assert v.shape == (3, 768)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2  # meaning, not noise


def test_without_the_parts_the_name_goes_to_the_hugging_face_cache(tmp_path, monkeypatch):
    monkeypatch.setattr("joyful.data.packaged_models.mpnet_parts", lambda: None)
    assert assembled_mpnet(tmp_path) is None
    assert not (tmp_path / "models").exists()
