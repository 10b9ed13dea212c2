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
``ShowerFile`` and ``RowReader``, ``read_file``, ``iter_showers``, ``scan``) and :mod:`.write` (the
writers). Adding a format means one module with a ``Format`` subclass and one entry in ``REGISTRY``.

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

Written files are uncompressed and contiguous by default, because reading speed is what training
needs: from the page cache an uncompressed directory reads about 7x faster than an lzf one (measured
in ``docs/data.md``), and a contiguous dataset serves any event range as one hyperslab without a chunk
index. Showers are sparse, so ``compression="lzf"`` (or ``"gzip"``) shrinks files about 20x: use it for
archives or when the file system, not the CPU, is the bottleneck.
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
from hepgan.data.formats.write import OutputExistsError, write_file, write_files, write_folder

__all__ = [
    "DEFAULT_CELL_THRESHOLD",
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
    "apply_cell_threshold",
    "cell_threshold",
    "detect_format",
    "expand_paths",
    "get_format",
    "grid_of",
    "iter_showers",
    "read_file",
    "scan",
    "shower_files_in",
    "write_file",
    "write_files",
    "write_folder",
]
