"""The data configuration of a training run: :class:`DataConfig` (Hydra schema ``data``) and :data:`KINDS`.

Kept apart from :mod:`hepgan.data.source`, which turns a ``DataConfig`` into sources
(:func:`hepgan.data.source.open_source`), so that the config schema loads without the simulator and
the readers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KINDS = ("simulated", "files")
"""Values of ``DataConfig.kind`` (interpreted by :func:`hepgan.data.source.open_source`)."""


@dataclass
class DataConfig:
    """Where the events come from and how they are turned into network inputs (Hydra schema ``data``).

    Common:
        kind: ``"simulated"`` (the embedded simulator, the default) or ``"files"`` (HDF5 files).
        seed: simulator seed for ``simulated``; not the shuffling seed (that is the pipeline's).
        shuffle: shuffle the training events every epoch.
        prefetch: batches prepared ahead by the pipeline's background thread.

    ``kind="simulated"``:
        geometry: ``"fixed25"`` (25x25x25) or ``"angle51"`` (51x51x25).
        n_events: training events, simulated once (``n_events * (X*Y*Z + 2) * 4`` bytes: 62.5 kB per fixed25
            and 260 kB per angle51 shower). Up to ``in_memory_max_gb`` they are kept in memory; larger
            sets go to the on-disk cache in ``cache_dir`` and are streamed from there.
        n_reference: held-out reference events for validation: events ``source.REFERENCE_START + i`` of the
            same seed's stream, so never one of the training events.
        energy: primary energy spec in GeV: ``"uniform:10:500"``, ``"loguniform:2:500"``,
            ``"fixed:100"``, ``"list:10,50,100"``.
        theta_deg: polar angle in degrees as a string: ``"90"`` (fixed) or ``"60:120"`` (uniform range).
        workers: simulator processes (also for writing the disk cache); the events do not depend on it.
        cache_dir: folder of the on-disk cache of simulated sets (``None`` = ``$HEPGAN_DATA_CACHE``, else
            ``~/.cache/hepgan/simulated``); see :mod:`hepgan.data.cache`. Shared by every run and job
            that asks for the same events: put it on a file system all of them see.
        in_memory_max_gb: a simulated set (training or reference, each on its own) up to this size is
            simulated into memory on first use; a larger one is cached on disk and streamed, so the
            process holds only the batches in flight. 0 = always use the disk cache.
        simulator: overrides of :class:`hepgan.data.simulate.SimulatorConfig` fields, e.g.
            ``{"radial_scale": 1.1}`` for 10 % wider showers.

    ``kind="files"``:
        paths: files, directories (every ``*.h5``/``*.hdf5``/``*.hdf`` inside) or glob patterns.
        reference_paths: files for the reference set; empty = hold out ``reference_fraction`` of the
            events of ``paths``, chosen by a fixed seed (the same set for every training seed).
        reference_fraction: fraction held out when ``reference_paths`` is empty (0 < f < 1).
        max_events: use at most this many training events (a fixed random subset); ``None`` = all.
        cache: keep whole files in RAM after their first read (decoded float32), while the total stays
            under ``cache_max_gb``. Needed for fast shuffled reading of compressed/chunked files;
            uncompressed 3DGAN files are read row by row from the file instead and never copied (see
            ``FileSource``). Not to be confused with ``cache_dir``, the simulated-data cache.
        cache_max_gb: RAM budget of the cache (per process).
        file_format: ``None`` (detect) or a :func:`hepgan.data.formats.detect_format` name.
        file_geometry: cell grid for CaloChallenge files that do not store one (``"fixed25"``,
            ``"angle51"``); ``None`` for the 3DGAN formats, whose grid is in the data.
        cell_threshold: cells below this energy (GeV) are read as 0; ``None`` = the format's default, the
            original readers' (1e-6 fixed25, 1e-4 angle, none for CaloChallenge:
            ``formats.DEFAULT_CELL_THRESHOLD``); 0 = the stored values.

    Preprocessing (``None`` = the model's paper preset, :meth:`Preprocess.for_model`):
        cell_scale: factor on cell energies (fixed25 preset 100, angle51 preset 1).
        cell_power: power applied after scaling (fixed25 preset 1, angle51 preset 0.85).
        energy_scale: factor on the primary energy (both presets 0.01, i.e. E/100).
    """

    kind: str = "simulated"
    seed: int = 0
    shuffle: bool = True
    prefetch: int = 2
    # simulated
    geometry: str = "fixed25"
    n_events: int = 4096
    n_reference: int = 1024
    energy: str = "uniform:10:500"
    theta_deg: str = "90"
    workers: int = 1
    cache_dir: str | None = None
    in_memory_max_gb: float = 1.0
    simulator: dict[str, Any] = field(default_factory=dict)
    # files
    paths: list[str] = field(default_factory=list)
    reference_paths: list[str] = field(default_factory=list)
    reference_fraction: float = 0.1
    max_events: int | None = None
    cache: bool = True
    cache_max_gb: float = 8.0
    file_format: str | None = None
    file_geometry: str | None = None
    cell_threshold: float | None = None
    # preprocessing overrides
    cell_scale: float | None = None
    cell_power: float | None = None
    energy_scale: float | None = None
