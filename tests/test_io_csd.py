"""CMU-MultimodalSDK computational sequences: alignment to labelled segments, roles, splits, labels, refusals."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from csd_fixtures import MOSI_LABELS, read_intervals, write_csd
from joyful.cli import app
from joyful.errors import DataError
from joyful.io import read_dialogues
from joyful.io.csd_folds import MOSI_FOLDS
from joyful.io.readers import detect_format

INF = np.inf


def nan_equal(a, b) -> None:
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=0, atol=1e-6)


def labels_seq(path, *, seven=False):
    """v1's segments out of time order, the last of zero length; v2 with two segments."""
    v1 = [[1.5], [-2.0], [0.0]]
    v2 = [[3.0], [-0.5]]
    if seven:
        v1 = [[1.5, 1, 0, 0, 0, 0, 0], [-2.0, 0, 2, 0.5, 0, 0, 0], [0.0, 0, 0, 0, 0, 0, 0]]
        v2 = [[3.0, 0, 0, 0, 1, 1, 0], [-0.5, 0, 0, 0, 0, 0, 0.2]]
    return write_csd(path, "All Labels" if seven else "Opinion Segment Labels", {
        "v1": ([[2, 4], [0, 2], [4, 4]], np.array(v1, np.float32)),
        "v2": ([[0, 1], [1, 3]], np.array(v2, np.float32)),
    })


def synthetic(d, *, seven=False, config: dict | None = None):
    """A dataset whose every expected average is written out in test_synthetic_alignment."""
    d.mkdir(exist_ok=True)
    labels_seq(d / "labels.csd", seven=seven)
    write_csd(d / "audio.csd", "COVAREP", {
        "v1": ([[0, 1], [1, 2.5], [2.5, 4], [4, 5], [5, 6]],
               np.array([[1, 0], [3, 2], [5, -INF], [50, 50], [100, 100]], np.float32)),
        "v2": ([[0, 3]], np.array([[7, 7]], np.float32)),
    })
    write_csd(d / "visual.csd", "FACET 4.2", {  # instantaneous frames; v2 has no face track
        "v1": ([[0.5, 0.5], [2, 2], [3, 3]], np.array([[1], [2], [4]], np.float32)),
    })
    write_csd(d / "text.csd", "glove_vectors", {
        "v1": ([[0, 2], [2, 4]], np.array([[1, 1, 1], [3, 3, 3]], np.float32)),
        "v2": ([[0, 3]], np.array([[2, 2, 2]], np.float32)),
    })
    write_csd(d / "words.csd", "words", {
        "v1": ([[1, 2], [0, 0.5], [0.5, 1], [2, 4]], ["there", "hello", "sp", "bye"]),
    })
    if config is not None:
        (d / "joyful-csd.json").write_text(json.dumps(config))
    return str(d)


ROLES = {"labels": "labels.csd", "a": "audio.csd", "v": "visual.csd", "t": "text.csd", "words": "words.csd"}


def test_synthetic_alignment(tmp_path):
    path = synthetic(tmp_path / "ds", config={**ROLES, "splits": {"train": ["v1", "v2"], "test": []}})
    assert detect_format(path) == "csd-dir"
    ds = read_dialogues(path)
    assert ds.source == f"{path}#train"
    v1, v2 = ds.dialogues
    assert (v1.id, v1.speakers, v2.speakers) == ("v1", ["v1"] * 3, ["v2"] * 2)
    assert v1.labels == [-2.0, 1.5, 0.0] and v2.labels == [3.0, -0.5]  # time order
    # [0,2]: frames [0,1] and [1,2.5]; [2,4]: [1,2.5] (straddles, so in both) and [2.5,4] (-inf read as 0);
    # [4,5] only touches [2,4]; the zero-length [4,4] gets no frame
    nan_equal(v1.features["a"], [[2, 1], [4, 1], [np.nan, np.nan]])
    nan_equal(v2.features["a"], [[7, 7], [7, 7]])
    nan_equal(v1.features["v"], [[1], [3], [np.nan]])  # instants 0.5 | 2 and 3 | none
    nan_equal(v2.features["v"], [[np.nan], [np.nan]])  # video absent from the visual sequence
    nan_equal(v1.features["t"], [[1, 1, 1], [3, 3, 3], [np.nan] * 3])
    nan_equal(v2.features["t"], [[2, 2, 2], [2, 2, 2]])
    assert v1.texts == ["hello there", "bye", ""] and v2.texts == ["", ""]


def test_config_splits_pick_videos(tmp_path):
    path = synthetic(tmp_path / "ds", config={**ROLES, "splits": {"train": ["v1"], "valid": ["v2"]}})
    assert [d.id for d in read_dialogues(path)] == ["v1"]
    assert [d.id for d in read_dialogues(path, role="valid")] == ["v2"]
    for suffix in ("#valid", "#dev"):
        ds = read_dialogues(path + suffix)
        assert [d.id for d in ds] == ["v2"] and ds.source == path + suffix
    with pytest.raises(DataError, match=r"has no 'test' split; its splits are train, valid"):
        read_dialogues(path + "#test")


def test_config_roles_leave_other_files_out(tmp_path):
    path = synthetic(tmp_path / "ds", config={"labels": "labels.csd", "a": "audio.csd"})
    (d, _) = read_dialogues(path)
    assert set(d.features) == {"a"} and d.texts is None


def test_video_in_no_split_is_left_out_with_a_warning(tmp_path):
    path = synthetic(tmp_path / "ds", config={**ROLES, "splits": {"train": ["v2"], "test": ["elsewhere"]}})
    with pytest.warns(UserWarning, match=r"1 labelled videos are in no split and are left out: v1"):
        assert [d.id for d in read_dialogues(path)] == ["v2"]


@pytest.mark.parametrize(
    ("config", "match"),
    [({"a": "audio.csd"}, "names no labels sequence"), ({**ROLES, "audio": "audio.csd"}, "unknown key 'audio'"),
     ({"labels": "nope.csd"}, "'nope.csd' is not a file"),
     ({"labels": "labels.csd", "splits": {"train": ["v1"], "valid": ["v1"]}}, "'v1' is in two splits"),
     ({"labels": "labels.csd", "splits": {"holdout": []}}, "unknown split 'holdout'")],
)
def test_bad_config(tmp_path, config, match):
    path = synthetic(tmp_path / "ds", config=config)
    with pytest.raises(DataError, match=match) as e:
        read_dialogues(path)
    assert e.value.source.endswith("joyful-csd.json")


def test_guessed_roles_are_said_one_line_per_file(tmp_path):
    d = tmp_path / "ds"
    path = synthetic(d)
    write_csd(d / "phones.csd", "phonemes", {"v1": ([[0, 1]], ["AH"])})
    with pytest.warns(UserWarning) as said:
        v1, v2 = read_dialogues(path)
    messages = sorted(str(w.message) for w in said)
    assert len(messages) == 6 and all("\n" not in m for m in messages)
    assert any("audio.csd: read as the audio features" in m and "'COVAREP'" in m for m in messages)
    assert any("visual.csd: read as the visual features" in m for m in messages)
    assert any("text.csd: read as the text features" in m for m in messages)
    assert any("words.csd: read as the words" in m for m in messages)
    assert any("labels.csd: read as the labels" in m for m in messages)
    assert any("phones.csd: left out" in m for m in messages)
    assert set(v1.features) == {"a", "v", "t"} and v1.texts == ["hello there", "bye", ""]
    with pytest.raises(DataError, match="holds one split"), pytest.warns(UserWarning):  # not MOSI/MOSEI, no splits
        read_dialogues(path + "#train")


def test_two_files_for_one_role_ask_for_a_config(tmp_path):
    d = tmp_path / "ds"
    path = synthetic(d)
    write_csd(d / "openface.csd", "OpenFace_2", {"v1": ([[0, 1]], np.ones((1, 2), np.float32))})
    with pytest.raises(DataError, match=r"both .* look like the visual features; say which") as e, pytest.warns(UserWarning):
        read_dialogues(path)
    assert "\n" not in str(e.value)


def test_seven_labels_need_a_task(tmp_path):
    path = synthetic(tmp_path / "ds", config=ROLES)
    (tmp_path / "ds" / "labels.csd").unlink()
    labels_seq(tmp_path / "ds" / "labels.csd", seven=True)
    with pytest.raises(DataError, match=r"All Labels .*--task multilabel or --task regression"):
        read_dialogues(path)
    v1, v2 = read_dialogues(path, task="multilabel")
    assert v1.labels == [("sad", "anger"), ("happy",), ()] and v2.labels == [("surprise", "disgust"), ("fear",)]
    v1, v2 = read_dialogues(path, task="regression")
    assert v1.labels == [-2.0, 1.5, 0.0] and v2.labels == [3.0, -0.5]
    with pytest.raises(DataError, match=r"classification task: its labels serve regression \(sentiment\) and"):
        read_dialogues(path, task="classification")


def test_one_value_labels_serve_regression_only(tmp_path):
    path = synthetic(tmp_path / "ds", config=ROLES)
    with pytest.raises(DataError, match=r"multilabel task: its labels serve regression \(sentiment\) only"):
        read_dialogues(path, task="multilabel")
    assert read_dialogues(path, task="regression").dialogues[0].labels == [-2.0, 1.5, 0.0]


def test_single_labels_file(tmp_path):
    path = str(labels_seq(tmp_path / "labels.dat"))  # content decides, not the name
    assert detect_format(path) == "csd"
    v1, v2 = read_dialogues(path)
    assert (v1.labels, v1.features, v1.texts, v2.labels) == ([-2.0, 1.5, 0.0], {}, None, [3.0, -0.5])
    with pytest.raises(DataError, match="holds one split"):
        read_dialogues(path + "#train")


def corrupt(tmp_path, name, videos):
    d = tmp_path / "ds"
    path = synthetic(d, config=ROLES)
    write_csd(d / name, "x", videos)
    with pytest.raises(DataError) as e:
        read_dialogues(path)
    assert e.value.source == str(d / name) and "\n" not in str(e.value)
    return e.value


def test_bad_sequences_name_file_video_and_field(tmp_path):
    e = corrupt(tmp_path, "audio.csd", {"v1": ([[0, 1], [1, 2]], np.ones((3, 2), np.float32))})
    assert (e.dialogue, e.field) == ("v1", "features") and "3 intervals" not in e.problem and "2 intervals" in e.problem
    e = corrupt(tmp_path, "audio.csd", {"v1": ([[0, 1], [2, 1.5]], np.ones((2, 2), np.float32))})
    assert (e.dialogue, e.field) == ("v1", "intervals") and "interval 1 ends (1.5 s) before it starts (2 s)" in e.problem
    e = corrupt(tmp_path, "visual.csd", {"v1": ([[0, 1], [1, 2]], np.array([[1.0], [np.nan]], np.float32))})
    assert (e.dialogue, e.field) == ("v1", "features") and "frame 1 holds NaN" in e.problem
    e = corrupt(tmp_path, "labels.csd", {"v1": ([[0, 1]], np.array([[np.nan]], np.float32))})
    assert (e.dialogue, e.field) == ("v1", "features")
    e = corrupt(tmp_path, "text.csd", {"v1": ([[0, 1]], np.ones((1, 3), np.float32)),
                                        "v2": ([[0, 1]], np.ones((1, 4), np.float32))})
    assert (e.dialogue, e.field) == ("v2", "features") and "width 4" in e.problem
    e = corrupt(tmp_path, "labels.csd", {"v1": ([[0, 1]], np.ones((1, 3), np.float32))})
    assert "3 values per segment" in e.problem
    e = corrupt(tmp_path, "audio.csd", {"v1": ([0, 1], np.ones((1, 2), np.float32))})
    assert (e.dialogue, e.field) == ("v1", "intervals")


def test_not_hdf5_and_no_data_group(tmp_path):
    d = tmp_path / "ds"
    path = synthetic(d, config=ROLES)
    (d / "audio.csd").write_text("not hdf5\n")
    with pytest.raises(DataError, match="not an HDF5 file") as e:
        read_dialogues(path)
    assert e.value.source == str(d / "audio.csd")
    import h5py

    with h5py.File(d / "audio.csd", "w") as f:
        f.create_group("COVAREP").create_group("metadata")
    with pytest.raises(DataError, match="has no 'data' group"):
        read_dialogues(path)


def test_cli_reports_a_bad_sequence_on_one_line_with_status_2(tmp_path):
    d = tmp_path / "ds"
    path = synthetic(d, config={**ROLES, "splits": {"train": ["v1"], "valid": ["v2"]}})
    write_csd(d / "audio.csd", "x", {"v1": ([[0, 1], [2, 1.5]], np.ones((2, 2), np.float32))})
    result = CliRunner().invoke(app, ["train", "--train", path, "--valid", path, "--out", str(tmp_path / "m"), "--quiet"])
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.count("\n") == 0 and "Traceback" not in result.output
    assert str(d / "audio.csd") in message and "'v1'" in message and "'intervals'" in message
    assert not (tmp_path / "m").exists()


# --- the real CMU-MOSI labels ----------------------------------------------------------------


def mosi_labels() -> str:
    if not MOSI_LABELS.is_file():
        pytest.skip(f"{MOSI_LABELS} not available (the real CMU-MOSI labels live in ../shared/data)")
    return str(MOSI_LABELS)


def test_real_mosi_labels_alone():
    ds = read_dialogues(mosi_labels())
    assert len(ds) == 93 and ds.n_utterances == 2199
    assert ds.source == str(MOSI_LABELS)
    d = next(d for d in ds if d.id == "03bSnISJMiM")
    np.testing.assert_allclose(d.labels[:3], [2.4, -0.8, -1.0], atol=1e-6)
    assert all(-3 <= x <= 3 for d in ds for x in d.labels) and all(not d.features for d in ds)
    starts = read_intervals(MOSI_LABELS)
    assert all(len(d) == len(starts[d.id]) for d in ds)


def reference_mean(segment, frames, x):
    """The documented rule restated frame by frame: overlap > 1e-5 s, or an instant inside [start, end)."""
    rows = [x[j] for j, (f0, f1) in enumerate(frames)
            if min(segment[1], f1) - max(segment[0], f0) > 1e-5 or (f1 - f0 <= 1e-5 and segment[0] <= f0 < segment[1])]
    return np.mean(rows, axis=0) if rows else np.full(x.shape[1], np.nan)


@pytest.fixture(scope="module")
def mosi_dir(tmp_path_factory):
    """Audio and visual sequences generated against the real segments: two frames per segment whose mean
    is the segment's (planted) value, and 10 videos left out of the visual sequence."""
    labels = mosi_labels()
    d = tmp_path_factory.mktemp("mosi")
    os.symlink(labels, d / "CMU_MOSI_Opinion_Labels.csd")  # linked, never copied
    rng = np.random.default_rng(0)
    audio, visual, planted = {}, {}, {}
    for k, (video, iv) in enumerate(sorted(read_intervals(MOSI_LABELS).items())):
        mid = iv.mean(axis=1)
        frames = np.concatenate([np.column_stack([iv[:, 0], mid]), np.column_stack([mid, iv[:, 1]])])
        value = rng.normal(size=(len(iv), 4))
        planted[video] = (iv, value)
        audio[video] = (frames, np.concatenate([value + 1, value - 1]).astype(np.float32))
        if k >= 10:
            visual[video] = (frames, np.concatenate([value[:, :2] * 2, value[:, :2] * 0]).astype(np.float32))
    write_csd(d / "CMU_MOSI_COVAREP.csd", "COVAREP", audio, dataset="CMU-MOSI")
    write_csd(d / "CMU_MOSI_Visual_Facet_42.csd", "FACET 4.2", visual, dataset="CMU-MOSI")
    return d, planted, audio, visual


def test_real_mosi_with_generated_features_uses_the_standard_folds(mosi_dir):
    d, planted, audio, visual = mosi_dir
    with pytest.warns(UserWarning) as said:
        train = read_dialogues(str(d))
        test = read_dialogues(f"{d}#test")
        valid = read_dialogues(str(d), role="valid")
    assert any("standard folds of CMU-MOSI" in str(w.message) for w in said)
    assert [x.id for x in train] == sorted(MOSI_FOLDS["train"])
    assert {x.id for x in test} == set(MOSI_FOLDS["test"]) and {x.id for x in valid} == set(MOSI_FOLDS["valid"])
    assert train.n_utterances + test.n_utterances + valid.n_utterances == 2199
    exact = 0
    for dlg in train:
        iv, value = planted[dlg.id]
        order = np.lexsort((iv[:, 1], iv[:, 0]))
        frames, x = audio[dlg.id]
        want = np.stack([reference_mean(iv[i], frames.astype(np.float64), x.astype(np.float64)) for i in order])
        nan_equal(dlg.features["a"], want)
        alone = [j for j, i in enumerate(order) if np.allclose(want[j], value[i], atol=1e-5)]
        exact += len(alone)
        if dlg.id in visual:
            vf, vx = visual[dlg.id]
            nan_equal(dlg.features["v"], [reference_mean(iv[i], vf.astype(np.float64), vx.astype(np.float64)) for i in order])
        else:
            assert np.isnan(dlg.features["v"]).all() and dlg.features["v"].shape == (len(dlg), 2)
    assert exact > 0.9 * train.n_utterances  # segments that overlap no neighbour get the planted value exactly
