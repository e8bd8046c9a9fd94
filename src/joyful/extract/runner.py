"""From a manifest to dialogues with text, audio and visual features, in parallel and resumable.

The work is split where it is cheapest to share: recordings are hashed and probed once
each, then every (utterance, modality) pair not already in the result cache becomes one
task, and whoever computes a result writes it to the cache at once, so a run killed at
any point resumes where it stopped. Tasks run on a pool of local worker processes
(``engine="local"``) or on a Dask cluster (``engine="dask"``: a LocalCluster, or the
workers of a running scheduler, which then need the recordings and the cache on storage
they share). Every task computes on one BLAS/OpenMP thread wherever it runs, so the
dataset is byte-identical whichever engine, worker or run computed which result. Texts
are encoded in the main process in one batch through :class:`TextEncoder`, which has a
cache of its own.

A recording that cannot be read fails only the utterances that use it: they are
reported (naming the manifest row, dialogue, utterance and file), their audio/visual
features are marked missing (NaN rows), and everything else goes on.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from joyful import __version__
from joyful.atomic import atomic_write_text
from joyful.data.schema import Dialogue, DialogueSet, missing_matrix
from joyful.data.text_encoder import TextEncoder, default_cache_dir
from joyful.errors import JoyfulError
from joyful.extract.audio import AudioFeatureSet, audio_extractor, audio_feature_set, warm_up
from joyful.extract.cache import ResultCache, package_version, result_key
from joyful.extract.manifest import Manifest, ManifestRow, read_manifest
from joyful.extract.media import MediaError, MediaInfo, decode_audio, probe, sample_frames, sha256_file
from joyful.extract.visual import VisualFeatureSet, face_features, visual_feature_set

#: What a modality is called in messages and in the sidecar's failure list.
KIND = {"t": "text", "a": "audio", "v": "visual"}
SIDECAR_SUFFIX = ".extraction.json"
CACHE_SUFFIX = ".cache"
SIDECAR_FORMAT = "joyful-extraction/1"
#: Where audio/visual tasks run: local worker processes, or a Dask cluster.
ENGINES = ("local", "dask")


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


@dataclass
class Failure:
    """One utterance's modality that could not be extracted, and why."""

    row: int
    dialogue: str
    index: int
    media: str
    modality: str
    error: str


@dataclass
class ExtractionReport:
    """What an extraction did: settings, widths, counts and failures (the sidecar's content)."""

    manifest: str
    text_encoder: str | None
    audio_features: str | None
    visual_features: str | None
    fps: float
    widths: dict[str, int]
    feature_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per audio/visual modality: what else determines its values (library versions, parameters)."""
    dialogues: int = 0
    utterances: int = 0
    present: dict[str, int] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    computed: dict[str, int] = field(default_factory=dict)
    """Audio/visual results computed in this run."""
    cached: dict[str, int] = field(default_factory=dict)
    """Audio/visual results found in the cache (no work done)."""
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed_files(self) -> list[str]:
        return list(dict.fromkeys(f.media for f in self.failures))

    def sidecar(self, dataset: str | None = None) -> dict[str, Any]:
        """The ``DATASET.extraction.json`` record; ``joyful train`` keeps it so predict can extract alike."""
        return {
            "format": SIDECAR_FORMAT,
            "joyful_version": __version__,
            "manifest": self.manifest,
            "dataset": dataset,
            "text_encoder": self.text_encoder,
            "audio_features": self.audio_features,
            "visual_features": self.visual_features,
            "fps": self.fps,
            "widths": self.widths,
            "feature_settings": self.feature_settings,
            "counts": {
                "dialogues": self.dialogues,
                "utterances": self.utterances,
                "present": self.present,
                "missing": self.missing,
                "computed": self.computed,
                "cached": self.cached,
                "failed": len(self.failures),
            },
            "failures": [asdict(f) for f in self.failures],
            "seconds": round(self.seconds, 3),
        }

    def summary(self) -> str:
        """One line for the end of a run: what was found, and what failed."""
        parts = [f"{self.utterances} utterances in {self.dialogues} dialogues"]
        for m in self.widths:
            parts.append(f"{KIND[m]} {self.present.get(m, 0)}/{self.utterances} (width {self.widths[m]})")
        done = sum(self.computed.values())
        parts.append(f"{done} results computed, {sum(self.cached.values())} from the cache")
        line = "; ".join(parts)
        if self.failures:
            utterances = len({(f.dialogue, f.index) for f in self.failures})
            files = self.failed_files
            line += (
                f"; FAILED: {utterances} utterance{'s' * (utterances != 1)} in {len(files)} media "
                f"file{'s' * (len(files) != 1)} ({', '.join(files[:5])}{', ...' if len(files) > 5 else ''}), "
                "marked missing"
            )
        return line


def sidecar_path(dataset: str | os.PathLike) -> Path:
    return Path(f"{dataset}{SIDECAR_SUFFIX}")


def extract_dataset(
    manifest: str | os.PathLike,
    out: str | os.PathLike,
    *,
    text_encoder: str | TextEncoder | None,
    audio_features: str | None,
    visual_features: str | None,
    fps: float,
    workers: int | None = None,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
    device: str = "auto",
    engine: str = "local",
    scheduler: str | None = None,
) -> ExtractionReport:
    """Extract, then write the dataset (JSONL) and its sidecar; the cache defaults to ``OUT.cache/``.

    Failures do not stop the run: the dataset is written with those utterances' audio
    or visual features missing, and the report lists them.
    """
    from joyful.io.jsonl import write_jsonl

    if all(_off(x) for x in (text_encoder, audio_features, visual_features)):
        raise JoyfulError("nothing to extract: text encoder, audio and visual features are all 'none'")
    cache_dir = Path(f"{out}{CACHE_SUFFIX}") if cache_dir is None else cache_dir
    data, report = dialogues_from_manifest(
        manifest,
        text_encoder=text_encoder,
        audio_features=audio_features,
        visual_features=visual_features,
        fps=fps,
        workers=workers,
        progress=progress,
        cache_dir=cache_dir,
        device=device,
        engine=engine,
        scheduler=scheduler,
    )
    write_jsonl(data.dialogues, out)
    atomic_write_text(sidecar_path(out), json.dumps(report.sidecar(str(out)), indent=2, ensure_ascii=False) + "\n")
    return report


def dialogues_from_manifest(
    manifest: str | os.PathLike | Manifest,
    *,
    text_encoder: str | TextEncoder | None,
    audio_features: str | None,
    visual_features: str | None,
    fps: float,
    workers: int | None = None,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
    device: str = "auto",
    engine: str = "local",
    scheduler: str | None = None,
) -> tuple[DialogueSet, ExtractionReport]:
    """Dialogues with features for every utterance of ``manifest``, and a report of what happened.

    ``None`` (or ``"none"``) for a modality leaves it out (with all three left out, the
    dialogues carry texts, speakers and labels only). Missing values are NaN rows of
    the modality's width: empty text, no recording, a recording without that stream, no
    face in any frame, or a failure (also listed in ``report.failures``). The result
    cache defaults to ``extract/`` in the user cache (``$JOYFUL_CACHE_DIR`` or
    ``~/.cache/joyful``), shared safely because results are keyed by content. ``device``
    is where the text encoder runs (audio and visual features are computed on the CPU).
    ``engine`` runs the audio/visual tasks in ``workers`` local processes (``"local"``)
    or on Dask (``"dask"``): a LocalCluster of ``workers`` processes, or the cluster of
    the running ``scheduler`` (e.g. ``tcp://host:8786``), whose workers must see the
    recordings and ``cache_dir`` at the same paths.
    """
    started = time.perf_counter()
    manifest = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
    encoder = _text_encoder(text_encoder, progress, device)
    audio = None if _off(audio_features) else audio_feature_set(audio_features)
    visual = None if _off(visual_features) else visual_feature_set(visual_features)
    check_packages(*(spec for spec in (audio, visual) if spec is not None))
    if not (isinstance(fps, (int, float)) and 0 < fps <= 120):
        raise JoyfulError(f"--fps must be a number of frames per second in (0, 120], got {fps!r}")
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise JoyfulError(f"--workers must be at least 1, got {workers}")
    if engine not in ENGINES:
        raise JoyfulError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if scheduler is not None and engine != "dask":
        raise JoyfulError(f"--scheduler {scheduler} needs --engine dask")

    widths = {}
    if encoder is not None:
        widths["t"] = encoder.dim
    if audio is not None:
        widths["a"] = audio.width
    if visual is not None:
        widths["v"] = visual.width
    report = ExtractionReport(
        manifest=manifest.source,
        text_encoder=None if encoder is None else encoder.name,
        audio_features=None if audio is None else audio.name,
        visual_features=None if visual is None else visual.name,
        fps=float(fps),
        widths=widths,
    )
    vectors: dict[str, dict[int, np.ndarray]] = {m: {} for m in widths}
    if audio is not None or visual is not None:
        cache = ResultCache(Path(cache_dir) if cache_dir is not None else default_cache_dir() / "extract")
        specs = {}
        if audio is not None:
            specs["a"] = (audio.name, audio.settings, audio.width)
        if visual is not None:
            specs["v"] = (visual.name, {**visual.settings, "fps": float(fps)}, visual.width)
        report.feature_settings = {m: settings for m, (_, settings, _) in specs.items()}
        with _pool(engine, workers, scheduler) as pool:
            _media_features(manifest, specs, float(fps), cache, pool, vectors, report, progress)
        report.failures.sort(key=lambda f: (f.row, f.modality))  # manifest order, whichever task ended first
    if encoder is not None:
        todo = [i for i, r in enumerate(manifest.rows) if r.text]
        vectors["t"] = dict(zip(todo, encoder.encode([manifest.rows[i].text for i in todo]), strict=True))
    data = _dialogues(manifest, vectors, widths)
    report.dialogues, report.utterances = len(data), data.n_utterances
    report.present = {m: len(v) for m, v in vectors.items()}
    report.missing = {m: report.utterances - len(v) for m, v in vectors.items()}
    report.seconds = time.perf_counter() - started
    return data, report


def check_packages(*specs: AudioFeatureSet | VisualFeatureSet) -> None:
    """Refuse, before any work, feature sets whose packages (or PyAV, to decode recordings) are not installed."""
    for spec in specs:
        if package_version(spec.package) is None:
            raise JoyfulError(f"feature set {spec.name!r} needs {spec.package}: pip install 'joyful[extract]'")
    if specs and package_version("av") is None:
        raise JoyfulError("decoding recordings needs PyAV (av): pip install 'joyful[extract]'")


def _off(spec: str | TextEncoder | None) -> bool:
    """Whether a modality was switched off (``None``, or the name ``none`` from the command line)."""
    return spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "none"))


def _text_encoder(spec: str | TextEncoder | None, progress: bool, device: str = "auto") -> TextEncoder | None:
    if isinstance(spec, TextEncoder):
        return spec
    if _off(spec):
        return None
    from joyful.training.device import resolve_device

    return TextEncoder(spec, show_progress=progress, device=str(resolve_device(device)))


# --------------------------------------------------------------------------- audio and visual


Spec = tuple[str, dict[str, Any], int]
"""An audio/visual feature set as the runner needs it: name, settings (part of the cache key), width."""


def _media_features(
    manifest: Manifest,
    specs: dict[str, Spec],
    fps: float,
    cache: ResultCache,
    pool: _Workers | _DaskWorkers,
    vectors: dict[str, dict[int, np.ndarray]],
    report: ExtractionReport,
    progress: bool,
) -> None:
    """Fill ``vectors`` for the audio/visual modalities in ``specs``: from the cache, else by the workers.

    The workers write each result to the cache themselves (the task carries the cache's
    path), so on a cluster a result survives the loss of this process as soon as it exists.
    """
    for m in specs:
        report.computed[m] = report.cached[m] = 0
    inspected = _inspect_media(manifest, list(specs), pool, report, progress)
    jobs = _cached_or_todo(manifest, inspected, specs, cache, vectors, report)
    rows = manifest.rows
    directory = str(cache.directory.resolve())
    tasks = [
        (directory, key, m, specs[m][0], str(rows[i].media), rows[i].start, rows[i].end, fps) for i, m, key in jobs
    ]
    audio = {specs[m][0] for _, m, _ in jobs if m == "a"}
    if audio:
        pool.warm_up(warm_up, *audio)
    quiet = not progress or not jobs
    with tqdm(total=len(jobs), desc="Extracting audio/visual features", unit="result", disable=quiet) as bar:
        for (i, m, _), outcome in pool.map(_compute, tasks, keys=jobs):
            bar.update()
            if isinstance(outcome, JoyfulError):  # the cache cannot be written: not the recording's fault
                raise outcome
            if isinstance(outcome, BaseException):
                _warn(f"{manifest.source}: {_row_text(rows[i])}: {KIND[m]}: {_reason(outcome)}")
                report.failures.append(_failure(rows[i], m, outcome))
                continue
            report.computed[m] += 1
            if outcome is not None:
                vectors[m][i] = outcome


def _inspect_media(
    manifest: Manifest, modalities: list[str], pool: _Workers | _DaskWorkers, report: ExtractionReport, progress: bool
) -> dict[Path, tuple[str, MediaInfo]]:
    """Content hash and streams of every recording; one that cannot be read fails all its utterances."""
    users: dict[Path, list[ManifestRow]] = {}
    for r in manifest.rows:
        if r.media is not None:
            users.setdefault(r.media, []).append(r)
    inspected = {}
    bar = tqdm(total=len(users), desc="Reading media", unit="file", disable=not progress or len(users) < 2)
    with bar:
        for path, outcome in pool.map(_inspect, list(users)):
            bar.update()
            if not isinstance(outcome, BaseException):
                inspected[path] = outcome
                continue
            affected = users[path]
            _warn(f"{manifest.source}: media {affected[0].media_name!r} [{_rows_text(affected)}]: {_reason(outcome)}")
            report.failures += [_failure(r, m, outcome) for r in affected for m in modalities]
    return inspected


def _cached_or_todo(
    manifest: Manifest,
    inspected: dict[Path, tuple[str, MediaInfo]],
    specs: dict[str, Spec],
    cache: ResultCache,
    vectors: dict[str, dict[int, np.ndarray]],
    report: ExtractionReport,
) -> list[tuple[int, str, str]]:
    """Take every result the cache has; return the rest as ``(row position, modality, cache key)``."""
    jobs = []
    for i, r in enumerate(manifest.rows):
        if r.media not in inspected:
            continue
        digest, info = inspected[r.media]
        for m, (name, settings, width) in specs.items():
            if not (info.has_audio if m == "a" else info.has_video):
                continue  # the recording has no such stream: missing, not a failure
            if info.duration is not None and (r.start or 0.0) >= info.duration:
                end = f"after the end of the file ({info.duration:g} s)"
                problem = MediaError(f"the segment starts at {r.start or 0:g} s, {end}")
                _warn(f"{manifest.source}: {_row_text(r)}: {KIND[m]}: {problem}")
                report.failures.append(_failure(r, m, problem))
                continue
            key = result_key(media=digest, start=r.start, end=r.end, modality=m, features=name, settings=settings)
            found, vector = cache.get(key, width)
            if not found:
                jobs.append((i, m, key))
                continue
            report.cached[m] += 1
            if vector is not None:
                vectors[m][i] = vector
    return jobs


def _inspect(path: Path) -> tuple[str, MediaInfo]:
    """Worker task: a recording's content hash and streams."""
    return sha256_file(path), probe(path)


def _compute(task: tuple[str, str, str, str, str, float | None, float | None, float]) -> np.ndarray | None:
    """Worker task: one utterance's audio or visual vector (``None``: no face seen), written to the cache."""
    directory, key, modality, name, path, start, end, fps = task
    vector = utterance_vector(modality, name, Path(path), start, end, fps)
    ResultCache(directory).put(key, vector)
    return vector


def utterance_vector(
    modality: str, name: str, path: Path, start: float | None, end: float | None, fps: float
) -> np.ndarray | None:
    """The audio (``"a"``) or visual (``"v"``) vector of feature set ``name`` for ``path`` from ``start`` to ``end``.

    ``None`` means no face was seen. Computed on one BLAS/OpenMP thread wherever it runs
    (in the main process, a local or Dask worker, the prediction service): a reduction
    split over another number of threads rounds differently, a resumed or distributed run
    mixes results of all kinds, and a recording sent to the service must get the values
    its model was trained on. The pools already use every core they are given, so nothing
    is lost. Raises :class:`MediaError` for a recording that cannot be decoded.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        if modality == "a":
            return audio_extractor(name)(decode_audio(path, start, end))
        return face_features(sample_frames(path, start, end, fps))


def _init_worker() -> None:
    """Ctrl-C is the main process's: it stops handing out work and waits for the results in progress.

    Otherwise every worker would die with a traceback of its own.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def _pool(engine: str, workers: int, scheduler: str | None) -> Iterator[_Workers | _DaskWorkers]:
    """The workers of ``engine``, shut down (a LocalCluster) or disconnected from (a scheduler) afterwards."""
    if engine == "local":
        with _Workers(workers) as pool:
            yield pool
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise JoyfulError("--engine dask needs Dask distributed: pip install 'joyful[cluster]'") from None
    if scheduler is None:
        # Processes of one thread each, as the local pool's; no dashboard (it needs bokeh and a free port).
        with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            ) as cluster,
            Client(cluster) as client,
        ):
            yield _DaskWorkers(client)
        return
    import dask
    from dask.utils import parse_timedelta

    timeout = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"))
    try:
        client = Client(scheduler, timeout=timeout)
    except (OSError, ValueError, TypeError) as e:
        raise JoyfulError(f"cannot reach the Dask scheduler {scheduler} ({e})") from None
    with client:
        try:  # else the tasks would wait, silently, for workers that may never come
            client.wait_for_workers(1, timeout=timeout)
        except TimeoutError:
            raise JoyfulError(
                f"the Dask scheduler {scheduler} has no workers after {timeout:g} s "
                f"(start them with: dask worker {scheduler} --nthreads 1)"
            ) from None
        yield _DaskWorkers(client)


class _Workers:
    """A process pool, or the calling process itself for ``workers == 1`` (no start-up cost, easy debugging).

    Workers are spawned, not forked: the caller may hold PyTorch threads and open
    files, which a forked child would inherit in an undefined state.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> _Workers:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def warm_up(self, fn: Callable, *args: Any) -> None:
        """``fn(*args)`` here, before any worker is started: spawned workers then load what it compiled."""
        fn(*args)

    def map(self, fn: Callable, items: Iterable, keys: Iterable | None = None) -> Iterator[tuple[Any, Any]]:
        """``(key, result or exception)`` for each item, in order of completion; keys default to the items."""
        items = list(items)
        keys = items if keys is None else list(keys)
        if self.workers == 1 or len(items) <= 1:
            for key, item in zip(keys, items, strict=True):
                yield key, _outcome(fn, item)
            return
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker
            )
        futures: dict[Future, Any] = {self._pool.submit(fn, item): key for key, item in zip(keys, items, strict=True)}
        for future in as_completed(futures):
            error = future.exception()
            if isinstance(error, BrokenProcessPool):
                raise JoyfulError(
                    "a worker process died (out of memory?); finished results are cached, so a rerun resumes"
                ) from error
            yield futures[future], error if error is not None else future.result()


class _DaskWorkers:
    """Tasks on a Dask cluster, with the interface of :class:`_Workers`.

    Dask reruns the task of a worker that died on another worker; a task that has
    killed several workers (``KilledWorker``), or a lost scheduler, stops the run, whose
    finished results are cached.
    """

    def __init__(self, client) -> None:
        self.client = client

    def warm_up(self, fn: Callable, *args: Any) -> None:
        """``fn(*args)`` on each worker in turn, never two at once (workers of one host share a compile cache)."""
        for address in list(self.client.scheduler_info()["workers"]):
            self.client.run(fn, *args, workers=[address])

    def map(self, fn: Callable, items: Iterable, keys: Iterable | None = None) -> Iterator[tuple[Any, Any]]:
        """``(key, result or exception)`` for each item, in order of completion; keys default to the items."""
        from distributed import KilledWorker, as_completed

        items = list(items)
        keys = items if keys is None else list(keys)
        if not items:
            return
        futures = dict(zip(self.client.map(fn, items, pure=False), keys, strict=True))
        for future in as_completed(list(futures)):
            key = futures.pop(future)
            if future.status == "finished":
                yield key, future.result()
                continue
            error = future.exception() if future.status == "error" else None
            if error is None or isinstance(error, KilledWorker):
                raise JoyfulError(
                    f"the Dask cluster lost the work ({error or future.status}); finished results are cached, "
                    "so a rerun resumes"
                ) from error
            yield key, error


def _outcome(fn: Callable, item: Any) -> Any:
    try:
        return fn(item)
    except Exception as e:  # reported per recording; one bad file must not stop the others
        return e


def _reason(error: BaseException) -> str:
    return str(error) if isinstance(error, MediaError) else f"{type(error).__name__}: {error}"


def _failure(r: ManifestRow, modality: str, error: BaseException) -> Failure:
    return Failure(r.row, r.dialogue, r.index, r.media_name, KIND[modality], _reason(error))


def _row_text(r: ManifestRow) -> str:
    return f"row {r.row}: dialogue {r.dialogue!r}: utterance {r.index}: media {r.media_name!r}"


def _rows_text(rows: list[ManifestRow]) -> str:
    shown = "; ".join(f"row {r.row}: dialogue {r.dialogue!r}: utterance {r.index}" for r in rows[:3])
    return shown + (f"; and {len(rows) - 3} more rows" if len(rows) > 3 else "")


def _warn(message: str) -> None:
    tqdm.write(f"joyful: warning: {message}", file=sys.stderr)


# --------------------------------------------------------------------------- dialogues


def _dialogues(manifest: Manifest, vectors: dict[str, dict[int, np.ndarray]], widths: dict[str, int]) -> DialogueSet:
    """Group rows into dialogues (utterances by index); missing vectors are NaN rows."""
    dialogues = []
    for did, ids in manifest.dialogues().items():
        rows = [manifest.rows[i] for i in ids]
        features = {}
        for m, width in widths.items():
            x = missing_matrix(len(rows), width)
            for k, i in enumerate(ids):
                if i in vectors[m]:
                    x[k] = vectors[m][i]
            features[m] = x
        labels = [r.label for r in rows]
        indices = [r.index for r in rows]
        dialogues.append(
            Dialogue(
                id=did,
                speakers=[r.speaker for r in rows],
                features=features,
                texts=[r.text for r in rows],
                labels=labels if any(lab is not None for lab in labels) else None,
                origin=None if indices == list(range(len(rows))) else indices,
            )
        )
    return DialogueSet(dialogues, manifest.source)
