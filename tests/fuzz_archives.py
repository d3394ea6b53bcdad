"""Hypothesis strategies for hostile competition archives, and the property they must meet.

An example is a small valid archive (a few trials, frames and neurons) with up to a few
mutations drawn from what goes wrong with real downloads and hostile zips: members dropped,
duplicated, renamed or added under odd names; ``.npy`` headers replaced (any shape, huge and
negative sizes included, any dtype); arrays cast to other dtypes, reshaped, stored in
Fortran order; NaN, ±inf and out-of-range values; member bytes cut or padded; members stored
or deflated, in any order; the zip truncated or a byte flipped.

:func:`check_conversion` is the property: converting the archive either yields a store that
passes ``verify`` or raises :class:`ArchiveError` with a one-line message naming the archive,
and then leaves no output and no temporary behind. Shared by ``tests/test_fuzz_archive.py``
(bounded) and ``benchmarks/fuzz_archive.py`` (long runs).
"""

from __future__ import annotations

import io
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

from sensorium_pipeline.data.convert import convert_archive
from sensorium_pipeline.data.integrity import verify_store
from sensorium_pipeline.errors import ArchiveError
from sensorium_pipeline.layout import (
    COORDINATES_MEMBER,
    LABELLED_TIERS,
    MODALITIES,
    STATISTICS,
    TIERS,
    TIERS_MEMBER,
    UNIT_IDS_MEMBER,
    data_member,
    statistic_member,
)

ROOT = "m"  #: root folder and zip stem
#: Names a hostile or careless zip may carry.
ODD_NAMES = (
    f"{ROOT}/data/videos/\u0663.npy",  # an Arabic-Indic digit: isdigit() but not ASCII
    f"{ROOT}/data/videos/\u00b2.npy",  # superscript two: isdigit() but int() fails
    f"{ROOT}/data/responses/01.npy",
    f"{ROOT}/data/responses/-1.npy",
    f"{ROOT}/data/behavior/1.npy.bak",
    f"../{ROOT}/data/videos/0.npy",
    f"/{ROOT}/meta/trials/tiers.npy",
    f"{ROOT}/data/videos/",
    f"{ROOT}\\data\\videos\\0.npy",
    "other/meta/trials/tiers.npy",
    f"{ROOT}/line\nbreak.npy",
    "__MACOSX/._x",
    f"{ROOT}/config.json",
    "toplevel.npy",
)
DTYPES = ("<f2", "<f4", "<f8", ">f8", "<i2", "<i8", "<u8", "|b1", "<c8", "<U5", "|S3", "|O", "<V8")
DESCRS = ("<f4", "<f8", "<i8", "|u1", "<U7", "|O", "<f16", "|V0", "bogus", "[('a', '<f4')]")
VALUES = (np.nan, np.inf, -np.inf, 1e39, -1e300, 3.4e38, -0.0, 5e-324)


@dataclass(frozen=True)
class Mutation:
    """One change to the archive; ``index`` picks the member (modulo the member count)."""

    kind: str
    index: int
    arg: object = None


@dataclass(frozen=True)
class ArchivePlan:
    """Everything that fixes one generated archive (Hypothesis prints it on a failure)."""

    n_ids: int
    with_files: tuple[int, ...]
    tiers: tuple[str, ...]
    n_neurons: int
    t_pad: int
    valid: tuple[int, ...]
    dtype: str
    deflate: bool
    seed: int
    mutations: tuple[Mutation, ...]
    order: tuple[int, ...] | None
    truncate: float | None
    flip: tuple[float, int] | None


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _header(shape: tuple[int, ...], descr: str, fortran: bool) -> bytes:
    """A ``.npy`` header as numpy writes one, for any shape and descr (checked by nobody)."""
    text = f"{{'descr': {descr!r}, 'fortran_order': {fortran}, 'shape': {shape!r}, }}"
    text += " " * ((64 - (10 + len(text) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode("latin1")


mutations = st.one_of(
    st.builds(Mutation, st.just("drop"), st.integers(0, 99)),
    st.builds(Mutation, st.just("duplicate"), st.integers(0, 99), st.booleans()),
    st.builds(Mutation, st.just("rename"), st.integers(0, 99), st.sampled_from(ODD_NAMES) | st.text(max_size=12)),
    st.builds(Mutation, st.just("add"), st.integers(0, 99), st.tuples(st.sampled_from(ODD_NAMES), st.binary(max_size=40))),
    st.builds(
        Mutation,
        st.just("header"),
        st.integers(0, 99),
        st.tuples(
            st.lists(st.integers(-3, 6) | st.sampled_from([2**31, 2**62 + 5, 2**63, 2**64 + 1, 2**70]), max_size=4),
            st.sampled_from(DESCRS),
            st.booleans(),
            st.integers(0, 400),
        ),
    ),
    st.builds(Mutation, st.just("dtype"), st.integers(0, 99), st.sampled_from(DTYPES)),
    st.builds(Mutation, st.just("shape"), st.integers(0, 99), st.sampled_from(["cut", "axis", "T", "empty", "flat"])),
    st.builds(Mutation, st.just("fortran"), st.integers(0, 99)),
    st.builds(Mutation, st.just("value"), st.integers(0, 99), st.tuples(st.sampled_from(VALUES), st.floats(0, 1))),
    st.builds(Mutation, st.just("bytes"), st.integers(0, 99), st.integers(-64, 64)),
)


@st.composite
def archive_plans(draw: st.DrawFn, max_mutations: int = 3) -> ArchivePlan:
    n_trials = draw(st.integers(1, 3))
    n_ids = n_trials + draw(st.integers(0, 2))
    with_files = tuple(sorted(draw(st.permutations(range(n_ids)))[:n_trials]))
    tiers = tuple(draw(st.sampled_from(TIERS)) for _ in with_files)
    t_pad = draw(st.integers(1, 4))
    plan_mutations = tuple(draw(st.lists(mutations, max_size=max_mutations)))
    return ArchivePlan(
        n_ids=n_ids,
        with_files=with_files,
        tiers=tiers,
        n_neurons=draw(st.integers(1, 3)),
        t_pad=t_pad,
        valid=tuple(draw(st.integers(1, t_pad)) for _ in with_files),
        dtype=draw(st.sampled_from(["<f4", "<f8", ">f4"])),
        deflate=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
        mutations=plan_mutations,
        order=tuple(draw(st.permutations(range(64)))) if draw(st.booleans()) else None,
        truncate=draw(st.floats(0, 1)) if draw(st.integers(0, 5)) == 0 else None,
        flip=draw(st.tuples(st.floats(0, 1), st.integers(1, 255))) if draw(st.integers(0, 5)) == 0 else None,
    )


def base_members(plan: ArchivePlan) -> list[tuple[str, np.ndarray]]:
    """The valid archive the plan starts from."""
    rng = np.random.default_rng(plan.seed)
    tiers = np.full(plan.n_ids, "none", dtype="<U16")
    tiers[list(plan.with_files)] = plan.tiers
    members: list[tuple[str, np.ndarray]] = [
        (f"{ROOT}/{TIERS_MEMBER}", tiers),
        (f"{ROOT}/{UNIT_IDS_MEMBER}", np.arange(1, plan.n_neurons + 1, dtype=np.int64) * 2),
        (f"{ROOT}/{COORDINATES_MEMBER}", rng.integers(0, 500, (plan.n_neurons, 3))),
    ]
    shapes = {"videos": (36, 64), "responses": (plan.n_neurons,), "behavior": (2,), "pupil_center": (2,)}
    for trial_id, tier, valid in zip(plan.with_files, plan.tiers, plan.valid, strict=True):
        for modality in MODALITIES:
            array = (rng.random((*shapes[modality], plan.t_pad)) * 10).astype(plan.dtype)
            array[..., valid:] = np.nan
            if modality == "responses" and tier not in LABELLED_TIERS:
                array[...] = 0  # withheld: zeros throughout, no padding
            members.append((data_member(ROOT, modality, trial_id), array))
    for modality in MODALITIES:
        for stat in STATISTICS:
            members.append((statistic_member(ROOT, modality, stat), rng.random((*shapes[modality], plan.t_pad))))
    return members


def _mutate(members: list[tuple[str, bytes]], arrays: dict[str, np.ndarray], change: Mutation) -> None:
    """Apply one mutation in place (those that do not apply to the chosen member do nothing)."""
    if not members:
        return
    i = change.index % len(members)
    name, data = members[i]
    array = arrays.get(name)
    kind, arg = change.kind, change.arg
    if kind == "drop":
        del members[i]
    elif kind == "duplicate":
        copy = data if arg or array is None else _npy(np.zeros_like(array))
        members.append((name, copy))
    elif kind == "rename":
        members[i] = (str(arg), data)
    elif kind == "add":
        extra_name, payload = arg
        members.append((extra_name, payload))
    elif kind == "header":
        shape, descr, fortran, length = arg
        members[i] = (name, _header(tuple(shape), descr, fortran) + bytes(length))
    elif kind == "bytes":
        members[i] = (name, data[:arg] if arg < 0 else data + b"\x00" * arg)
    elif array is not None:
        new = _changed_array(array, kind, arg)
        if new is not None:
            members[i] = (name, _npy(new))


def _changed_array(array: np.ndarray, kind: str, arg: object) -> np.ndarray | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if kind == "dtype":
                return array.astype(np.dtype(str(arg))) if arg != "|O" else array.astype(object)
            if kind == "shape":
                return {
                    "cut": lambda a: a[..., :-1],
                    "axis": lambda a: a[None],
                    "T": lambda a: a.T,
                    "empty": lambda a: a[..., :0],
                    "flat": lambda a: a.ravel(),
                }[str(arg)](array)
            if kind == "fortran":
                return np.asfortranarray(array)
            if kind == "value" and array.dtype.kind == "f" and array.size:
                value, where = arg
                changed = array.astype(np.float64) if abs(value) > 3.5e38 else array.copy()
                changed.flat[min(int(where * array.size), array.size - 1)] = value
                return changed
        except (ValueError, TypeError, OverflowError):
            return None
    return None


def build_archive(plan: ArchivePlan, path: Path) -> Path:
    """Write the plan's archive to ``path`` (``<ROOT>.zip``)."""
    arrays = dict(base_members(plan))
    members = [(name, _npy(array)) for name, array in arrays.items()]
    for change in plan.mutations:
        _mutate(members, arrays, change)
    if plan.order is not None:
        rank = {k: r for r, k in enumerate(plan.order)}
        members = [m for _, m in sorted(enumerate(members), key=lambda im: rank.get(im[0], im[0]))]
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name"
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, data in members:
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED if plan.deflate else zipfile.ZIP_STORED
                archive.writestr(info, data)
    data = bytearray(buffer.getvalue())
    if plan.flip is not None:
        where, mask = plan.flip
        data[min(int(where * len(data)), len(data) - 1)] ^= mask
    if plan.truncate is not None:
        data = data[: int(plan.truncate * len(data))]
    path.write_bytes(bytes(data))
    return path


def check_conversion(plan: ArchivePlan, folder: Path) -> tuple[str, str]:
    """Convert the plan's archive; return ``("store", "")`` or ``("ArchiveError", message)``, else
    fail (an AssertionError, or the unexpected exception itself)."""
    archive = build_archive(plan, folder / f"{ROOT}.zip")
    out = folder / "data" / ROOT
    try:
        convert_archive(archive, out, workers=1, verify_trials=8, sha256="0" * 64)
    except ArchiveError as error:
        message = str(error)
        assert "\n" not in message and "\r" not in message, f"message of several lines: {message!r}"
        assert message.startswith(f"{archive}: "), f"message does not start with the archive: {message!r}"
        assert not out.exists(), "an ArchiveError left an output"
        assert not list(out.parent.glob(f".{ROOT}.tmp-*")) if out.parent.exists() else True, "a temporary was left"
        return "ArchiveError", message
    report = verify_store(out)
    assert report["ok"], report
    assert not list(out.parent.glob(f".{ROOT}.tmp-*")), "a temporary was left beside a finished store"
    return "store", ""
