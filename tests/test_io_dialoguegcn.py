"""DialogueGCN / MMGCN tuple pickles in their IEMOCAP and MELD layouts."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest

from joyful import Joyful, JoyfulConfig
from joyful.api import integer_label_names
from joyful.data.labels import LABEL_SETS
from joyful.errors import DataError
from joyful.io import read_dialogues

# The published integer label orders, written out here (not imported from joyful) so that a
# wrong constant in the code fails these tests:
#: IEMOCAP_features.pkl of DialogueGCN/DialogueRNN (declare-lab/conv-emotion, dataloader.py):
#: "label index mapping = {'hap':0, 'sad':1, 'neu':2, 'ang':3, 'exc':4, 'fru':5}"; COGMEN uses the same.
IEMOCAP_ORDER = ("hap", "sad", "neu", "ang", "exc", "fru")
#: MELD's pickles (declare-lab/MELD README, "Labelling"): "Emotion - {'neutral': 0, 'surprise': 1,
#: 'fear': 2, 'sadness': 3, 'joy': 4, 'disgust': 5, 'anger': 6}"; DialogueGCN's and MMGCN's
#: MELD_features_raw.pkl repeat it ("label index mapping" in their MELDDataset).
MELD_ORDER = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")


def vecs(rng, n, width):
    return [rng.standard_normal(width) for _ in range(n)]


def iemocap_tuple(rng=None):
    """IEMOCAP_features.pkl: ids, speakers, labels, text, audio, visual, sentences, train ids, test ids."""
    rng = rng or np.random.default_rng(0)
    sizes = {"Ses01F_impro01": 4, "Ses01M_impro02": 3, "Ses05F_script01": 2}
    ids = {v: [f"{v}_{i}" for i in range(n)] for v, n in sizes.items()}
    speakers = {v: ["F", "M"] * (n // 2) + ["F"] * (n % 2) for v, n in sizes.items()}
    labels = {v: list(range(n)) for v, n in sizes.items()}
    text = {v: vecs(rng, n, 100) for v, n in sizes.items()}
    audio = {v: vecs(rng, n, 100) for v, n in sizes.items()}
    visual = {v: vecs(rng, n, 512) for v, n in sizes.items()}
    sentence = {v: [f"line {i}" for i in range(n)] for v, n in sizes.items()}
    return (
        ids,
        speakers,
        labels,
        text,
        audio,
        visual,
        sentence,
        ["Ses01F_impro01", "Ses01M_impro02"],
        ["Ses05F_script01"],
    )


def meld_tuple(with_visual):
    """MELD_features_raw.pkl (no visual) or MMGCN's MELD pickle (with visual); a sentiment dict trails."""
    rng = np.random.default_rng(1)
    sizes = {0: 3, 1: 2, 7: 2}
    onehot = {v: [np.eye(9)[i % 3] for i in range(n)] for v, n in sizes.items()}
    feats = [{v: vecs(rng, n, w) for v, n in sizes.items()} for w in ((600, 300, 342) if with_visual else (600, 300))]
    return (
        {v: list(range(n)) for v, n in sizes.items()},
        onehot,
        {v: [i % 7 for i in range(n)] for v, n in sizes.items()},
        *feats,
        {v: [f"Oh my God, heâ€™s {i}" for i in range(n)] for v, n in sizes.items()},
        [0, 1],
        [7],
        {v: [0] * n for v, n in sizes.items()},
    )


def write(tmp_path, obj, name="features.pkl", protocol=2):
    path = tmp_path / name
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return str(path)


def test_iemocap_layout(tmp_path):
    obj = iemocap_tuple()
    path = write(tmp_path, obj)
    train = read_dialogues(path, int_label_names=IEMOCAP_ORDER)
    assert [d.id for d in train] == ["Ses01F_impro01", "Ses01M_impro02"]
    d = train.dialogues[0]
    assert d.speakers == ["F", "M", "F", "M"] and d.labels == ["hap", "sad", "neu", "ang"]
    assert d.texts == ["line 0", "line 1", "line 2", "line 3"]
    assert train.widths() == {"t": 100, "a": 100, "v": 512}
    np.testing.assert_allclose(d.features["v"], np.stack(obj[5]["Ses01F_impro01"]), rtol=1e-6)
    test = read_dialogues(path, role="test")
    assert [d.id for d in test] == ["Ses05F_script01"] and test.source == f"{path}#test"


@pytest.mark.parametrize("label_set", ["iemocap6", "iemocap4"])
def test_integer_iemocap_labels_get_the_published_names(tmp_path, label_set):
    """Through the path training takes: the model's label set picks the names of the integers."""
    assert integer_label_names(label_set) == IEMOCAP_ORDER  # IEMOCAP-4 files use IEMOCAP-6's first four
    ids, spk, lab, t, a, v, s, train, test = iemocap_tuple()
    ids["Ses01F_impro01"] = [f"u{i}" for i in range(6)]
    spk["Ses01F_impro01"] = ["F", "M"] * 3
    lab["Ses01F_impro01"] = [5, 4, 3, 2, 1, 0]
    rng = np.random.default_rng(3)
    t["Ses01F_impro01"], a["Ses01F_impro01"], v["Ses01F_impro01"] = vecs(rng, 6, 100), vecs(rng, 6, 100), vecs(rng, 6, 512)
    s["Ses01F_impro01"] = [f"line {i}" for i in range(6)]
    path = write(tmp_path, (ids, spk, lab, t, a, v, s, train, test))
    clf = Joyful(JoyfulConfig(label_set=label_set))
    ds = clf.prepare(path, role="train", label_set=LABEL_SETS[label_set], progress=False)
    d = ds.dialogues[0]
    if label_set == "iemocap6":
        assert d.labels == ["fru", "exc", "ang", "neu", "sad", "hap"]
    else:  # exc (4) and fru (5) utterances are removed, the rest keep their names
        assert d.labels == ["ang", "neu", "sad", "hap"] and d.speakers == ["F", "M", "F", "M"]
    assert ds.dialogues[1].labels == ["hap", "sad", "neu"]


@pytest.mark.parametrize("with_visual", [False, True])
def test_integer_meld_labels_get_the_published_names(tmp_path, with_visual):
    """MELD integers 0-6 read with the names the code picks for a meld7 model: the pickles' order, not MELD7's."""
    assert integer_label_names("meld7") == MELD_ORDER
    obj = list(meld_tuple(with_visual))
    rng = np.random.default_rng(4)
    obj[0][0] = list(range(7))
    obj[1][0] = [np.eye(9)[i % 3] for i in range(7)]
    obj[2][0] = [0, 1, 2, 3, 4, 5, 6]
    for k in range(3, 5 + with_visual):
        obj[k][0] = vecs(rng, 7, len(obj[k][1][0]))
    obj[5 + with_visual][0] = [f"line {i}" for i in range(7)]
    path = write(tmp_path, tuple(obj), protocol=4)
    clf = Joyful(JoyfulConfig(label_set="meld7", modalities="ta"))
    ds = clf.prepare(path, role="train", label_set=LABEL_SETS["meld7"], progress=False)
    assert ds.dialogues[0].labels == ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"]


@pytest.mark.parametrize("role_or_suffix", [{"role": "valid"}, {"spec_suffix": "#dev"}, {"spec_suffix": "#valid"}])
def test_no_validation_split(tmp_path, role_or_suffix):
    path = write(tmp_path, iemocap_tuple())
    with pytest.raises(DataError, match=r"separate validation file") as e:
        read_dialogues(path + role_or_suffix.get("spec_suffix", ""), role=role_or_suffix.get("role", "train"))
    message = str(e.value).partition(": ")[2]  # after the file name, which holds the '#dev' of the spec
    # Validating (early stopping) on the test split would leak it into training: never suggest it.
    assert "#test" not in message
    assert not re.search(r"\b(use|using|try|validate on|validating on)\b[^.;(]*\btest\b", message), message
    assert re.search(r"\b(never|not|do not|don't)\b[^.;]*\btest split\b", message), message  # it warns against it


@pytest.mark.parametrize("with_visual", [False, True])
def test_meld_layouts(tmp_path, with_visual):
    path = write(tmp_path, meld_tuple(with_visual), protocol=4)
    train = read_dialogues(path, int_label_names=integer_label_names("meld7"))
    assert [d.id for d in train] == ["0", "1"]
    d = train.dialogues[0]
    assert d.speakers == ["0", "1", "2"]
    assert d.labels == ["neutral", "surprise", "fear"]
    assert d.texts[0] == "Oh my God, he’s 0"
    assert train.widths() == ({"t": 600, "a": 300, "v": 342} if with_visual else {"t": 600, "a": 300})
    assert [d.id for d in read_dialogues(path + "#test")] == ["7"]


def test_dev_list_when_present(tmp_path):
    ids, spk, lab, t, a, v, s, _, test = iemocap_tuple()
    path = write(tmp_path, (ids, spk, lab, t, a, v, s, ["Ses01F_impro01"], ["Ses01M_impro02"], test))
    assert [d.id for d in read_dialogues(path, role="valid")] == ["Ses01M_impro02"]


@pytest.mark.parametrize(
    "obj",
    [
        ({"a": [1]}, ["a"], ["a"]),  # too few dicts
        (({"a": [1]},) * 10) + (["a"], ["a"]),  # too many feature dicts
        iemocap_tuple()[:7],  # no id lists
        [1, 2, 3],
        42,
    ],
)
def test_unrecognised_layout(tmp_path, obj):
    with pytest.raises(DataError, match="layout not recognised"):
        read_dialogues(write(tmp_path, obj))


def test_id_missing_from_a_dict(tmp_path):
    obj = list(iemocap_tuple())
    del obj[2]["Ses01M_impro02"]
    with pytest.raises(DataError) as e:
        read_dialogues(write(tmp_path, tuple(obj)))
    assert e.value.dialogue == "Ses01M_impro02" and e.value.field == "label"


def test_mismatched_widths_across_dialogues(tmp_path):
    obj = iemocap_tuple()
    obj[4]["Ses01M_impro02"] = [np.zeros(50) for _ in range(3)]
    with pytest.raises(DataError) as e:
        read_dialogues(write(tmp_path, obj))
    assert e.value.dialogue == "Ses01M_impro02" and e.value.field == "audio"
    assert "width 50 differs from width 100" in str(e.value)


def test_speaker_count_differs_from_features(tmp_path):
    obj = iemocap_tuple()
    obj[3]["Ses01F_impro01"] = obj[3]["Ses01F_impro01"][:3]
    with pytest.raises(DataError) as e:
        read_dialogues(write(tmp_path, obj))
    assert e.value.dialogue == "Ses01F_impro01" and e.value.field == "text_features"
