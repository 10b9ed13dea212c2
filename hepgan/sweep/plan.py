"""Index-addressed sweep plans: one Hydra override set per line, run by array jobs.

A sweep is written in Hydra's override grammar (``optim.lr_g=1e-3,5e-4 train.batch_size=64,128
model=fixed25_paper``, ``range(...)``, ``choice(...)``, ``glob(...)``) and expanded by Hydra's own parser and
``BasicSweeper``, so the plan's entries are exactly the jobs ``hepgan-train -m`` would launch, in the
same order. Entry ``i`` of the plan is then addressable by an array task index, which is all a batch
system (Slurm, LSF, PanDA) needs.

Plan file format (text, UTF-8)::

    # hepgan-sweep plan v1
    # sweep: optim.lr_g=1e-3,5e-4 train.batch_size=64,128
    optim.lr_g=1e-3 train.batch_size=64
    optim.lr_g=1e-3 train.batch_size=128  # optuna_study=hpo optuna_trial=1

Lines starting with ``#`` are comments; every other non-empty line is one entry (its index is its position
among entries, from 0). An entry is a shell-quoted override list (``shlex``), so a line can be pasted onto
a ``hepgan-train`` command line; an optional trailing ``# key=value ...`` carries metadata (the Optuna
trial an entry belongs to). Lines end with LF or CRLF; no other character ends a line, so an override may
hold any other character (a form feed, U+2028) and still read back as one entry.

Index (``<plan>.idx``, written by :func:`write_plan` beside every plan): an array task reads only its own
entries. Little-endian binary: a 40-byte header (magic ``HGPLNIDX``, format version, header size, entry
count, the plan's byte size and modification time in ns) followed by one ``uint64`` byte offset per entry,
the start of its line. A task reads the header and the offsets it needs, then seeks in the plan and parses
only its own lines, in a time independent of the plan's length (:func:`open_plan_index`,
:func:`read_plan_entries`, :func:`plan_length`). A plan without an index (written by hand, or by an older
hepgan) or whose size or modification time no longer matches its index (edited, or copied without its
times) is indexed again with one byte scan, and the index is written when the folder allows it. A damaged
index (wrong magic, truncated, offsets not at entry lines) is an error: it may not be ours to overwrite;
``hepgan-sweep index PLAN`` rebuilds it.
"""

from __future__ import annotations

import os
import shlex
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hepgan.fileio import write_bytes

PLAN_HEADER = "# hepgan-sweep plan v1"
INDEX_SUFFIX = ".idx"
INDEX_MAGIC = b"HGPLNIDX"
INDEX_VERSION = 1
# magic, version, header size, entry count, plan size (bytes), plan mtime (ns)
_INDEX_HEADER = struct.Struct("<8sIIQQq")
_OFFSET = struct.Struct("<Q")
_UTF8_BOM = b"\xef\xbb\xbf"
# the ASCII characters str.isspace() accepts: stripping these bytes equals str.lstrip() on ASCII text
_ASCII_SPACE = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"


@dataclass(frozen=True)
class PlanEntry:
    """One line of a plan: the overrides of one training run and optional metadata (strings)."""

    overrides: tuple[str, ...]
    meta: Mapping[str, str] = field(default_factory=dict)

    def to_line(self) -> str:
        """The plan-file line for this entry (shell-quoted overrides, then ``# key=value`` metadata)."""
        line = shlex.join(self.overrides)
        if self.meta:
            line += "  # " + " ".join(f"{k}={v}" for k, v in self.meta.items())
        return line

    @staticmethod
    def from_line(line: str, *, where: str = "plan") -> PlanEntry:
        """Parse one plan-file line (see the module docstring); ``where`` names it in errors."""
        try:
            tokens = shlex.split(line)
        except ValueError as exc:
            raise ValueError(f"{where}: cannot split line {line!r} as shell words ({exc})") from None
        overrides: list[str] = []
        meta: dict[str, str] = {}
        in_meta = False
        for tok in tokens:
            if not in_meta and tok.startswith("#"):
                in_meta = True
                tok = tok[1:]
                if not tok:
                    continue
            if in_meta:
                key, sep, value = tok.partition("=")
                if not sep:
                    raise ValueError(f"{where}: metadata {tok!r} in line {line!r} is not key=value")
                meta[key] = value
            else:
                overrides.append(tok)
        return PlanEntry(tuple(overrides), meta)


# ---------------------------------------------------------------------------------------------------------
# Expansion (Hydra's grammar and BasicSweeper's order)
# ---------------------------------------------------------------------------------------------------------


def config_loader(config_module: str | None = None, config_dir: str | os.PathLike | None = None) -> Any:
    """A Hydra config loader over ``config_dir`` (a folder) or ``config_module`` (a package: hepgan.conf).

    Only needed for sweeps over config groups with ``glob(...)``; returns ``None`` when neither is given.
    """
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path

    if config_dir is not None:
        path = Path(config_dir)
        if not path.is_dir():
            raise ValueError(f"config dir {str(path)!r} does not exist or is not a folder")
        search = f"file://{path.resolve()}"
    elif config_module is not None:
        search = f"pkg://{config_module}"
    else:
        return None
    return ConfigLoaderImpl(config_search_path=create_config_search_path(search))


def expand_sweep(overrides: Sequence[str], *, loader: Any = None) -> list[list[str]]:
    """Expand a Hydra sweep into the override sets of its jobs, in Hydra multirun order.

    ``overrides``: Hydra override strings, sweeps included (``a=1,2 b=range(3) +c=x``). Uses
    ``OverridesParser`` and ``BasicSweeper.split_arguments`` (the code behind ``hydra -m``), so a key given
    twice keeps its first position and its last values, exactly as in Hydra.
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create(config_loader=loader)
    try:
        parsed = parser.parse_overrides(list(overrides))
        batches = BasicSweeper.split_arguments(parsed, None)
    except HydraException as exc:
        raise ValueError(
            f"sweep {' '.join(overrides)!r} is not valid Hydra override grammar: {exc}"
        ) from None
    return [list(job) for job in batches[0]]


def _yaml_scalar(value: Any) -> str:
    """A YAML scalar written back as Hydra override text (YAML true -> ``true``, not Python's ``True``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return ",".join(_yaml_scalar(v) for v in value)
    return str(value)


def read_sweep_file(path: str | os.PathLike) -> list[str]:
    """Read a sweep definition from YAML into Hydra override strings.

    Accepted layouts: a list of override strings; or a mapping with ``params`` (``key: "v1,v2"`` as in
    ``hydra.sweeper.params``; a YAML list of values is joined into a sweep) and optional ``overrides``
    (a list of override strings, applied after ``params`` like a command line is).
    """
    import yaml

    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"sweep file {str(p)!r}: cannot read YAML ({exc})") from None
    if isinstance(doc, list):
        return [_yaml_scalar(x) for x in doc]
    if not isinstance(doc, dict) or not set(doc) <= {"params", "overrides"}:
        raise ValueError(
            f"sweep file {str(p)!r}: expected a list of overrides or a mapping with keys 'params' "
            f"(key: values) and 'overrides' (list); got {type(doc).__name__} "
            f"{sorted(doc) if isinstance(doc, dict) else ''}"
        )
    params = doc.get("params") or {}
    extra = doc.get("overrides") or []
    if not isinstance(params, dict) or not isinstance(extra, list):
        raise ValueError(f"sweep file {str(p)!r}: 'params' must be a mapping and 'overrides' a list")
    return [f"{k}={_yaml_scalar(v)}" for k, v in params.items()] + [_yaml_scalar(x) for x in extra]


def sweep_arguments(args: Sequence[str]) -> list[str]:
    """Command-line sweep arguments -> override strings: ``*.yaml``/``*.yml`` files are read, others kept."""
    out: list[str] = []
    for a in args:
        if a.endswith((".yaml", ".yml")) and "=" not in a:
            out.extend(read_sweep_file(a))
        else:
            out.append(a)
    return out


# ---------------------------------------------------------------------------------------------------------
# Plan files
# ---------------------------------------------------------------------------------------------------------


def write_plan(path: str | os.PathLike, entries: Sequence[PlanEntry], *, comment: str | None = None) -> Path:
    """Write ``entries`` as a plan file and its index ``<path>.idx`` (each atomically); return the plan path.

    Raises ValueError for an entry that cannot be one plan line (no overrides, or a line break in an
    override or metadata value), OSError when a file cannot be written (the plan is written first).
    """
    p = Path(path)
    lines = [PLAN_HEADER]
    if comment:
        lines += [f"# {c}" for c in comment.splitlines()]
    n_head = len(lines)
    for i, e in enumerate(entries):
        line = e.to_line()
        if not e.overrides or "\n" in line or not _is_entry_line(line.encode("utf-8")):
            raise ValueError(
                f"plan {str(p)!r}: entry {i} ({e!r}) cannot be written as one plan line: it needs at least "
                "one override, and no override or metadata value may hold a line break"
            )
        lines.append(line)
    data = ("\n".join(lines) + "\n").encode("utf-8")
    offsets, pos = [], 0
    for k, line in enumerate(lines):
        if k >= n_head:
            offsets.append(pos)
        pos += len(line.encode("utf-8")) + 1
    p.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(p, data)
    st = p.stat()
    write_bytes(plan_index_path(p), _index_bytes(offsets, st.st_size, st.st_mtime_ns))
    return p


def read_plan(path: str | os.PathLike) -> list[PlanEntry]:
    """Read a whole plan file into its entries (index = position); parses every line.

    An array task needs only its own entries: :func:`read_plan_entries` reads them in constant time.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ValueError(f"plan file {str(p)!r} cannot be read ({exc.strerror})") from None
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    entries = []
    for n, raw in enumerate(data.split(b"\n"), start=1):
        if _is_entry_line(raw):
            entries.append(PlanEntry.from_line(_decode_line(raw, f"{p}:{n}"), where=f"{p}:{n}"))
    return entries


def _is_entry_line(raw: bytes) -> bool:
    """Whether a plan line (bytes, without its LF) is an entry: not blank and not a ``#`` comment."""
    s = raw.lstrip(_ASCII_SPACE)
    if not s:
        return False
    if s[0] < 0x80:
        return s[0] != 0x23  # '#'
    # the line starts with a non-ASCII character: it may be Unicode white space (U+3000) before a '#'
    text = s.decode("utf-8", errors="replace").lstrip()
    return bool(text) and not text.startswith("#")


def _decode_line(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8").removesuffix("\r")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{where}: line is not UTF-8 ({exc})") from None


# ---------------------------------------------------------------------------------------------------------
# Plan index: what an array task reads
# ---------------------------------------------------------------------------------------------------------


def plan_index_path(path: str | os.PathLike) -> Path:
    """The index file of a plan: the plan path with ``.idx`` appended (``hpo/plan.txt.idx``)."""
    p = Path(path)
    return p.with_name(p.name + INDEX_SUFFIX)


def _index_bytes(offsets: Sequence[int] | Any, plan_size: int, plan_mtime_ns: int) -> bytes:
    """Index file content: header, then the entry offsets as little-endian uint64."""
    import numpy as np

    offs = np.asarray(offsets, dtype="<u8")
    head = _INDEX_HEADER.pack(
        INDEX_MAGIC, INDEX_VERSION, _INDEX_HEADER.size, len(offs), plan_size, plan_mtime_ns
    )
    return head + offs.tobytes()


def _scan_offsets(data: bytes) -> Any:
    """Byte offsets of the entry lines of a plan's content (a NumPy int64 array), by one vectorised scan.

    Gives the same entries as :func:`read_plan` without splitting any line as shell words: a line is
    classified by its first byte, and only lines starting with white space or a non-ASCII byte (rare) are
    looked at one by one.
    """
    import numpy as np

    buf = np.frombuffer(data, dtype=np.uint8)
    first_line = len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0
    starts = np.concatenate(([first_line], np.flatnonzero(buf == ord("\n")) + 1)).astype(np.int64)
    starts = starts[starts < len(data)]
    first = buf[starts]
    space = np.zeros(256, dtype=bool)
    space[list(_ASCII_SPACE)] = True
    blank = first == ord("\n")
    unsure = (space[first] & ~blank) | (first >= 0x80)
    entry = ~blank & ~unsure & (first != ord("#"))
    for k in np.flatnonzero(unsure):
        s = int(starts[k])
        end = data.find(b"\n", s)
        entry[k] = _is_entry_line(data[s : len(data) if end < 0 else end])
    return starts[entry]


@dataclass(frozen=True)
class PlanIndex:
    """An opened plan index: entry count and the means to read single entries without the whole plan.

    ``path``: the plan. ``n_entries``: its entry count. ``plan_size``/``plan_mtime_ns``: the plan as it was
    when the index was checked (a plan changed since makes :meth:`entries` raise). ``offsets``: the entry
    offsets when this process scanned the plan itself (then ``None`` means: read them from the index file).
    """

    path: Path
    n_entries: int
    plan_size: int
    plan_mtime_ns: int
    offsets: Any = None

    def __len__(self) -> int:
        return self.n_entries

    def _offsets_of(self, indices: Sequence[int]) -> list[int]:
        if self.offsets is not None:
            return [int(self.offsets[i]) for i in indices]
        ip = plan_index_path(self.path)
        out = []
        try:
            with open(ip, "rb") as f:
                for i in indices:
                    f.seek(_INDEX_HEADER.size + i * _OFFSET.size)
                    raw = f.read(_OFFSET.size)
                    if len(raw) != _OFFSET.size:
                        raise ValueError(_damaged(ip, self.path, "shorter than its entry count says"))
                    out.append(_OFFSET.unpack(raw)[0])
        except OSError as exc:
            raise ValueError(f"plan index {str(ip)!r} cannot be read ({exc.strerror})") from None
        return out

    def entries(self, indices: Sequence[int]) -> list[PlanEntry]:
        """The entries at ``indices`` (0-based plan positions), reading only their lines of the plan."""
        for i in indices:
            if not 0 <= i < self.n_entries:
                raise ValueError(
                    f"plan {str(self.path)!r} has {self.n_entries} entries; index {i} is out of range"
                )
        offsets = self._offsets_of(indices)
        out = []
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                if (st.st_size, st.st_mtime_ns) != (self.plan_size, self.plan_mtime_ns):
                    raise ValueError(
                        f"plan {str(self.path)!r} changed while it was being read; start the task again"
                    )
                for i, off in zip(indices, offsets, strict=True):
                    where = f"{self.path} entry {i} (byte {off})"
                    prev = b"\n"
                    if off > 0:
                        f.seek(off - 1)
                        prev = f.read(1)
                    else:
                        f.seek(0)
                    raw = f.readline().removesuffix(b"\n")
                    at_start = prev == b"\n" or (off == len(_UTF8_BOM) and prev == _UTF8_BOM[-1:])
                    if off >= self.plan_size or not at_start or not _is_entry_line(raw):
                        raise ValueError(
                            _damaged(plan_index_path(self.path), self.path, f"{where} is not an entry line")
                        )
                    out.append(PlanEntry.from_line(_decode_line(raw, where), where=where))
        except OSError as exc:
            raise ValueError(f"plan file {str(self.path)!r} cannot be read ({exc.strerror})") from None
        return out


def _damaged(index: Path, plan: Path, why: str) -> str:
    return (
        f"plan index {str(index)!r} is damaged ({why}); rebuild it with `hepgan-sweep index {plan}` "
        "(or delete it: the next task rebuilds it)"
    )


def _build_index(p: Path, why: str, *, write: bool, log: Callable[[str], None] | None) -> PlanIndex:
    """Scan the plan ``p`` for its entry offsets, write its index (best effort unless ``write``)."""
    try:
        with open(p, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except OSError as exc:
        raise ValueError(f"plan file {str(p)!r} cannot be read ({exc.strerror})") from None
    offsets = _scan_offsets(data)
    ip = plan_index_path(p)
    try:
        write_bytes(ip, _index_bytes(offsets, st.st_size, st.st_mtime_ns))
        note = f"wrote {ip}"
    except OSError as exc:
        if write:
            raise ValueError(f"plan index {str(ip)!r} cannot be written ({exc.strerror})") from None
        note = (
            f"could not write {ip} ({exc.strerror}), so every task scans the plan: run "
            f"`hepgan-sweep index {p}` where the folder is writable"
        )
    if log is not None and why:
        log(f"plan {p} {why}: indexed {len(offsets)} entries by one scan; {note}")
    return PlanIndex(p, len(offsets), st.st_size, st.st_mtime_ns, offsets)


def index_plan(path: str | os.PathLike) -> PlanIndex:
    """(Re)build the index of a plan from its content and write it; ValueError when it cannot be written.

    Needed after editing a plan by hand or copying it without its times (``cp`` without ``-p``), so that
    the array's tasks do not each index it again (they do so when they find the index out of date).
    """
    return _build_index(Path(path), "", write=True, log=None)


def open_plan_index(path: str | os.PathLike, *, log: Callable[[str], None] | None = None) -> PlanIndex:
    """Open a plan for reading single entries: reads the index header only, in constant time.

    A missing index, or one whose recorded plan size or modification time differs from the plan's (edited
    or copied), is rebuilt by one byte scan of the plan and written when possible; ``log`` gets one line
    saying so. A damaged index raises ValueError naming it and how to rebuild it.
    """
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise ValueError(f"plan file {str(p)!r} cannot be read ({exc.strerror})") from None
    ip = plan_index_path(p)
    try:
        with open(ip, "rb") as f:
            index_size = os.fstat(f.fileno()).st_size
            head = f.read(_INDEX_HEADER.size)
    except FileNotFoundError:
        return _build_index(p, "has no index", write=False, log=log)
    except OSError as exc:
        raise ValueError(f"plan index {str(ip)!r} cannot be read ({exc.strerror})") from None
    if len(head) < _INDEX_HEADER.size:
        raise ValueError(_damaged(ip, p, f"{len(head)} bytes, shorter than its header"))
    magic, version, head_size, n, plan_size, plan_mtime_ns = _INDEX_HEADER.unpack(head)
    if magic != INDEX_MAGIC:
        raise ValueError(_damaged(ip, p, f"magic {magic!r}, expected {INDEX_MAGIC!r}: not a plan index"))
    if version != INDEX_VERSION or head_size != _INDEX_HEADER.size:
        raise ValueError(_damaged(ip, p, f"format version {version}; this hepgan reads {INDEX_VERSION}"))
    expected = _INDEX_HEADER.size + n * _OFFSET.size
    if index_size != expected:
        raise ValueError(_damaged(ip, p, f"{index_size} bytes, but {n} entries need {expected}"))
    if (plan_size, plan_mtime_ns) != (st.st_size, st.st_mtime_ns):
        return _build_index(p, "changed since it was indexed (or was copied)", write=False, log=log)
    return PlanIndex(p, n, plan_size, plan_mtime_ns)


def plan_length(path: str | os.PathLike, *, log: Callable[[str], None] | None = None) -> int:
    """Number of entries of a plan, from its index header (see :func:`open_plan_index`)."""
    return len(open_plan_index(path, log=log))


def read_plan_entries(
    path: str | os.PathLike, indices: Sequence[int], *, log: Callable[[str], None] | None = None
) -> list[PlanEntry]:
    """The plan entries at ``indices`` (0-based), reading only the index header, their offsets and their
    lines; equal to ``[read_plan(path)[i] for i in indices]``. ValueError for an index out of range."""
    return open_plan_index(path, log=log).entries(indices)


def plan_sweep(overrides: Sequence[str], *, loader: Any = None) -> list[PlanEntry]:
    """The plan entries of a Hydra sweep (see :func:`expand_sweep`)."""
    return [PlanEntry(tuple(job)) for job in expand_sweep(overrides, loader=loader)]


def default_sweep_dir(plan_path: str | os.PathLike) -> Path:
    """Where a plan's runs go unless told otherwise: the plan path without its suffix (``hpo/plan.txt`` ->
    ``hpo/plan``)."""
    p = Path(plan_path)
    return p.with_suffix("") if p.suffix else p.with_name(p.name + ".runs")


# ---------------------------------------------------------------------------------------------------------
# Array index mapping
# ---------------------------------------------------------------------------------------------------------


def scheduler_task(env: Mapping[str, str] | None = None) -> tuple[int, dict[str, str]]:
    """The 0-based array task index of this process and a description of the job it belongs to.

    Slurm: ``SLURM_ARRAY_TASK_ID`` as is (submit with ``--array=0-(N-1)``; use ``--offset -1`` for a
    1-based range). LSF: ``LSB_JOBINDEX`` minus 1 (LSF arrays are 1-based, ``bsub -J "name[1-N]"``).
    PanDA/other: ``HEPGAN_TASK_INDEX`` (0-based). Raises ValueError when none is set.
    """
    env = os.environ if env is None else env
    if env.get("SLURM_ARRAY_TASK_ID", "") != "":
        idx = _int_env(env, "SLURM_ARRAY_TASK_ID")
        job = {
            "scheduler": "slurm",
            "job_id": env.get("SLURM_ARRAY_JOB_ID", env.get("SLURM_JOB_ID", "")),
            "task_id": str(idx),
            "restart_count": env.get("SLURM_RESTART_COUNT", "0"),
        }
        return idx, job
    if env.get("LSB_JOBINDEX", "0") not in ("", "0"):
        raw = _int_env(env, "LSB_JOBINDEX")
        return raw - 1, {"scheduler": "lsf", "job_id": env.get("LSB_JOBID", ""), "task_id": str(raw)}
    if env.get("HEPGAN_TASK_INDEX", "") != "":
        idx = _int_env(env, "HEPGAN_TASK_INDEX")
        return idx, {"scheduler": "env", "job_id": env.get("PANDAID", ""), "task_id": str(idx)}
    raise ValueError(
        "--index auto: no array task index in the environment (looked for SLURM_ARRAY_TASK_ID, "
        "LSB_JOBINDEX > 0, HEPGAN_TASK_INDEX); run inside an array job or give the index explicitly"
    )


def _int_env(env: Mapping[str, str], key: str) -> int:
    try:
        return int(env[key])
    except ValueError:
        raise ValueError(f"environment variable {key}={env[key]!r} is not an integer") from None


def job_info(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Scheduler job description of this process (empty scheduler "local" outside a batch system)."""
    env = os.environ if env is None else env
    try:
        return scheduler_task(env)[1]
    except ValueError:
        job_id = env.get("SLURM_JOB_ID") or env.get("LSB_JOBID") or env.get("PANDAID") or ""
        return {"scheduler": "local" if not job_id else "batch", "job_id": job_id, "task_id": ""}


def task_entries(task_index: int, n_entries: int, *, offset: int = 0, per_task: int = 1) -> range:
    """Plan indices run by array task ``task_index``: ``offset + task_index*per_task`` and the next
    ``per_task - 1``, clipped to the plan.

    ``offset`` lets a plan longer than the scheduler's array limit (Slurm ``MaxArraySize``, often 1001)
    be split over several submissions of the same array range; ``per_task`` packs several short runs
    into one task. An empty range means the task has nothing to do (the array is larger than the plan).
    """
    if per_task < 1:
        raise ValueError(f"--per-task must be >= 1; got {per_task}")
    if task_index < 0:
        raise ValueError(f"array task index must be >= 0; got {task_index}")
    start = offset + task_index * per_task
    if start < 0:
        raise ValueError(f"offset {offset} + task {task_index} * per-task {per_task} is negative ({start})")
    return range(min(start, n_entries), min(start + per_task, n_entries))
