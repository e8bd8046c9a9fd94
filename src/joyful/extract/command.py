"""The ``joyful extract`` command: a manifest of recordings in, a dataset of features out.

Kept free of heavy imports at module level, because the command line imports it just to
register the command.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from joyful.config import JoyfulConfig
from joyful.extract import DEFAULT_AUDIO_FEATURES, DEFAULT_FPS, DEFAULT_VISUAL_FEATURES

AUDIO_HELP = (
    "Audio feature set: librosa (default; permissive licence), or openSMILE functionals egemaps, gemaps, "
    "compare2016, emobase, is09, is10, is11, is12, is13 (openSMILE: research/personal use only; commercial use "
    "needs a licence from audEERING); none = no audio."
)


def extract_command(
    *,
    manifest: Annotated[
        Path,
        typer.Option(
            help="CSV/TSV (or JSONL) with one row per utterance: dialogue, index, speaker, media "
            "(audio or video file, relative to the manifest), optional text, start, end (seconds), label.",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            help="Dataset to write (JSONL dialogues for train/evaluate/predict); "
            "OUT.extraction.json records the settings.",
        ),
    ],
    text_encoder: Annotated[
        str, typer.Option(help="sentence-transformers model name or directory for the texts; none = no text.")
    ] = JoyfulConfig().text_encoder,
    audio_features: Annotated[str, typer.Option(help=AUDIO_HELP)] = DEFAULT_AUDIO_FEATURES,
    visual_features: Annotated[
        str, typer.Option(help="Visual feature set: face (faces found in sampled video frames), or none.")
    ] = DEFAULT_VISUAL_FEATURES,
    fps: Annotated[float, typer.Option(help="Video frames sampled per second for visual features.")] = DEFAULT_FPS,
    workers: Annotated[
        Optional[int],
        typer.Option(
            help="Worker processes for audio/visual extraction (default: min(2, CPUs)); with --engine dask and "
            "no --scheduler, the LocalCluster's workers (ignored with --scheduler)."
        ),
    ] = None,
    engine: Annotated[
        str,
        typer.Option(
            help="Where audio/visual extraction runs: local (worker processes here) or dask (a Dask LocalCluster, "
            "or the cluster of --scheduler; needs the cluster extra: pip install 'joyful\\[cluster]')."
        ),
    ] = "local",
    scheduler: Annotated[
        Optional[str],
        typer.Option(
            help="Address of a running Dask scheduler (e.g. tcp://HOST:8786) for --engine dask; its workers must "
            "see the recordings and --cache at the same paths (shared storage such as NFS)."
        ),
    ] = None,
    cache: Annotated[
        Optional[Path],
        typer.Option(help="Directory of per-utterance results, so a rerun resumes (default: OUT.cache)."),
    ] = None,
    device: Annotated[str, typer.Option(help="Where the text encoder runs: auto (CUDA when present, else CPU), cpu, cuda, cuda:N or mps.")] = "auto",
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Build text, audio and visual features from recordings listed in a manifest.

    Missing text, recording, audio/video stream or visible face: that modality is marked missing. Results are cached per utterance, so an interrupted run resumes. Unreadable recordings are reported and their utterances marked missing; the dataset is still written, and the exit status is 1.
    """  # noqa: E501 (one line: the help screen keeps line breaks)

    from joyful.extract.runner import extract_dataset, sidecar_path

    report = extract_dataset(
        manifest,
        out,
        text_encoder=text_encoder,
        audio_features=audio_features,
        visual_features=visual_features,
        fps=fps,
        workers=workers,
        progress=not quiet,
        cache_dir=cache,
        device=device,
        engine=engine,
        scheduler=scheduler,
    )
    typer.echo(f"joyful: {report.summary()}", err=True)
    counts = report.sidecar(str(out))["counts"]
    typer.echo(json.dumps({"dataset": str(out), "sidecar": str(sidecar_path(out)), "widths": report.widths, **counts}))
    if report.failures:
        raise typer.Exit(1)
