"""The restricted unpickler: loads what the research pickles hold, refuses everything else."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import types
from collections import OrderedDict, defaultdict

import numpy as np
import pytest

from joyful.errors import DataError
from joyful.io.safe_pickle import SAMPLE_MODULES, safe_load
from joyful.io.sample import Sample


def load(data: bytes):
    return safe_load(io.BytesIO(data), "x.pkl")


class SystemCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class EvalCall:
    def __reduce__(self):
        return (eval, ("1 + 1",))


class PopenCall:
    def __reduce__(self):
        return (subprocess.Popen, (["true"],))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_arrays_scalars_and_containers(protocol):
    obj = {
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": [np.int64(3), np.float32(1.5)],
        "c": OrderedDict(x=1),
        "d": defaultdict(list, y=[1]),
        "e": {1, 2},
        "f": (b"raw", "text"),
    }
    out = load(pickle.dumps(obj, protocol=protocol))
    np.testing.assert_array_equal(out["a"], obj["a"])
    assert out["b"] == [3, 1.5] and out["c"] == obj["c"] and out["d"]["y"] == [1]
    assert out["e"] == {1, 2} and out["f"] == (b"raw", "text")


def test_python2_names_are_mapped():
    # protocol 2 as written by Python 2: set([1, 2]) names __builtin__.set
    py2 = b"\x80\x02c__builtin__\nset\nq\x00]q\x01(K\x01K\x02e\x85q\x02Rq\x03."
    assert load(py2) == {1, 2}


def test_python2_numpy_array():
    # what Python 2's cPickle writes for np.array([1, 2, 3], "<f4"): raw data as a py2 str
    raw = np.array([1.0, 2.0, 3.0], dtype="<f4").tobytes()
    py2 = (
        b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nq\x00cnumpy\nndarray\nq\x01K\x00\x85U\x01b\x87Rq\x02"
        b"(K\x01K\x03\x85cnumpy\ndtype\nU\x02f4K\x00K\x01\x87R(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        b"\x89U\x0c" + raw + b"tb."
    )
    np.testing.assert_array_equal(load(py2), np.array([1.0, 2.0, 3.0], dtype=np.float32))


@pytest.mark.parametrize("module", SAMPLE_MODULES)
def test_author_sample_class_maps_to_ours(module):
    # protocol 4: STACK_GLOBAL module.Sample, NEWOBJ, BUILD {"vid": "d1", "extra": 7}
    name = b"\x8c" + bytes([len(module)]) + module.encode()
    data = b"\x80\x04" + name + b"\x8c\x06Sample\x93)\x81}(\x8c\x03vid\x8c\x02d1\x8c\x05extraK\x07ub."
    out = load(data)
    assert isinstance(out, Sample)
    assert out.vid == "d1" and out.extra == 7 and out.audio is None


def test_real_author_class_pickle_keeps_extras(monkeypatch):
    cls = type("Sample", (), {"__module__": "cogmen.Sample"})
    mod = types.ModuleType("cogmen.Sample")
    mod.Sample = cls
    monkeypatch.setitem(sys.modules, "cogmen", types.ModuleType("cogmen"))
    monkeypatch.setitem(sys.modules, "cogmen.Sample", mod)
    s = cls()
    s.vid, s.speaker, s.sbert_sentence_embeddings = "v", ["M"], np.ones((1, 4), np.float32)
    out = load(pickle.dumps([s]))[0]
    assert isinstance(out, Sample) and out.speaker == ["M"]
    assert out.sbert_sentence_embeddings.shape == (1, 4)


def test_refuses_os_system_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(DataError) as e:
        load(pickle.dumps(SystemCall(marker)))
    assert f"{os.system.__module__}.system" in str(e.value)
    assert "not allowed" in str(e.value) and str(e.value).startswith("x.pkl")
    assert not marker.exists()


@pytest.mark.parametrize(("obj", "name"), [(EvalCall(), "builtins.eval"), (PopenCall(), "subprocess.Popen")])
def test_refuses_other_callables(obj, name):
    with pytest.raises(DataError, match=name):
        load(pickle.dumps(obj))


def test_refuses_protocol0_global(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(DataError, match=r"os\.system"):
        load(f"cos\nsystem\n(S'touch {marker}'\ntR.".encode())
    assert not marker.exists()


def test_codecs_encode_only_latin1():
    ok = b"\x80\x02c_codecs\nencode\nX\x02\x00\x00\x00abX\x06\x00\x00\x00latin1\x86R."
    assert load(ok) == b"ab"
    bad = b"\x80\x02c_codecs\nencode\nX\x02\x00\x00\x00abX\x04\x00\x00\x00zlib\x86R."
    with pytest.raises(DataError, match="unreadable"):
        load(bad)


@pytest.mark.parametrize("cut", [1, 10, -3])
def test_truncated_pickle(cut):
    data = pickle.dumps({"train": [np.zeros((3, 4))] * 3}, protocol=4)
    with pytest.raises(DataError, match="unreadable or truncated"):
        load(data[:cut])


def test_garbage_is_a_data_error():
    with pytest.raises(DataError, match="unreadable or truncated"):
        load(b"\x80\x04not a pickle at all")


def test_sample_state_must_be_a_dict():
    data = b"\x80\x04\x8c\x06cogmen\x8c\x06Sample\x93)\x81K\x05b."
    with pytest.raises(DataError, match="unreadable"):
        load(data)
