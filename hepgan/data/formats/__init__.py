"""The HDF5 shower formats: detect, read (streaming), validate and write.

Three formats, each one HDF5 file of ``N`` events (see ``docs/data.md`` for the full description),
each one module holding a :class:`~hepgan.data.formats.base.Format` object:

``fixed25`` (fixed-angle 3DGAN, the public ``EleEscan_*.h5`` files; :mod:`.fixed25`)
    ``ECAL`` ``[N, 25, 25, 25]`` cell energies (GeV) and ``target`` ``[N, C >= 2]`` with the particle id
    (PDG code, +-11 for electrons) in ``target[:, 0]`` and the primary energy (GeV) in ``target[:, 1]``.
``angle`` (variable-angle 3DGAN / AngleGAN; :mod:`.angle`)
    ``ECAL`` ``[N, 51, 51, 25]`` (GeV), ``energy`` ``[N]`` (GeV), ``theta`` and/or ``mtheta`` ``[N]`` (rad),
    optionally ``eta``, ``phi``, ``HCAL``, ``pdgID``, ... passed through ``Showers.extra``.
``calochallenge`` (Fast Calorimeter Simulation Challenge 2022; :mod:`.calochallenge`)
    ``incident_energies`` ``[N, 1]`` (MeV) and ``showers`` ``[N, n_voxels]`` (MeV). The flat voxel axis
    has no geometry of its own, so our writer stores the grid (``grid`` = X, Y, Z) and the flattening
    order (``voxel_order``) as file attributes; a file without them needs the grid passed in.

The package: :mod:`.base` (the ``Format`` interface, ``ShowerFileError``, constants), one module per
format, :mod:`.core` (the registry ``REGISTRY``, opening and checking files, the readers
``ShowerFile`` and ``RowReader``, ``read_file``, ``iter_showers``, ``scan``), :mod:`.write` (the
writers and their storage options) and :mod:`.provenance` (what wrote a file). Adding a format means
one module with a ``Format`` subclass and one entry in ``REGISTRY``.

Reading can apply a cell threshold, as the original 3DGAN readers do: cells below it are set to 0.
``threshold=None`` takes the format's default (``DEFAULT_CELL_THRESHOLD``: 1e-6 GeV for ``fixed25``,
1e-4 GeV for ``angle``, none for ``calochallenge``), a number sets it; the functions here default to 0
(the stored values unchanged), so that conversion and round trips stay exact. Training from files
(``data.cell_threshold``) and ``hepgan-evaluate`` read with the format's default.

Reading never loads a whole file or directory at once: ``iter_showers`` streams chunks and
``ShowerFile`` reads any range or set of events. Every chunk read is checked for non-finite and
negative values (a cheap per-event min and sum); any problem is a ``ShowerFileError`` naming the file,
the key, the event range and what was expected. ``RowReader`` is the training path: scattered rows,
conditions held in memory, cells of uncompressed 3DGAN files by positional reads.

Storage: the command-line writers (``hepgan-simulate``, ``hepgan-generate``, ``hepgan-data convert``)
compress by default (:data:`DEFAULT_COMPRESSION`, ``--compression none|lzf|gzip|gzip:LEVEL``; chosen in
``docs/data.md``, "Storage", from ``hepgan-bench hdf5_compression``). The library writers take
``compression=`` (a string or a :class:`Storage`) and default to contiguous, uncompressed datasets: the
layout the on-disk cache of simulated sets uses, whose rows training reads by positional reads. Every
written file records its provenance in a few root attributes (:mod:`.provenance`:
:func:`provenance_attrs`, :func:`file_provenance`); readers need none of them.
"""

from __future__ import annotations

from hepgan.data.formats.base import (
    DEFAULT_PDG_ID,
    DEFAULT_VOXEL_ORDER,
    MEV_PER_GEV,
    Format,
    Layout,
    ShowerFileError,
)
from hepgan.data.formats.core import (
    DEFAULT_CELL_THRESHOLD,
    DEFAULT_GRID,
    FORMATS,
    REGISTRY,
    FileInfo,
    RowReader,
    ShowerFile,
    apply_cell_threshold,
    cell_threshold,
    detect_format,
    expand_paths,
    get_format,
    grid_of,
    iter_showers,
    read_file,
    scan,
    shower_files_in,
)
from hepgan.data.formats.provenance import file_provenance, provenance_attrs
from hepgan.data.formats.write import (
    COMPRESSION_HELP,
    COMPRESSIONS,
    DEFAULT_COMPRESSION,
    OutputExistsError,
    Storage,
    compression_arg,
    write_file,
    write_files,
    write_folder,
)

__all__ = [
    "COMPRESSIONS",
    "COMPRESSION_HELP",
    "DEFAULT_CELL_THRESHOLD",
    "DEFAULT_COMPRESSION",
    "DEFAULT_GRID",
    "DEFAULT_PDG_ID",
    "DEFAULT_VOXEL_ORDER",
    "FORMATS",
    "MEV_PER_GEV",
    "REGISTRY",
    "FileInfo",
    "Format",
    "Layout",
    "OutputExistsError",
    "RowReader",
    "ShowerFile",
    "ShowerFileError",
    "Storage",
    "apply_cell_threshold",
    "cell_threshold",
    "compression_arg",
    "detect_format",
    "expand_paths",
    "file_provenance",
    "get_format",
    "grid_of",
    "iter_showers",
    "provenance_attrs",
    "read_file",
    "scan",
    "shower_files_in",
    "write_file",
    "write_files",
    "write_folder",
]
