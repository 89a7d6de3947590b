"""Malformed data files give one DataError naming the file, the line when known, the problem and the fix: through
``hierlmm.datasets.read_csv``, through ``hierlmm.fit`` on what it reads, and through ``hierlmm fit --data FILE`` (exit
status 2, "hierlmm: error:", no traceback). Issue 17, "no bare tracebacks"."""

from __future__ import annotations

import bz2
import gzip
import io
import tempfile
import warnings
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hierlmm
from hierlmm.cli import main
from hierlmm.datasets import read_csv
from hierlmm.errors import DataError, DatasetNotFoundError, HierlmmError

FORMULA = "y ~ t + (1 | g)"


def table(n: int = 30, seed: int = 1) -> pd.DataFrame:
    """A small clean long table: y (two decimals), t, g (10 groups of 3 rows)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"y": np.round(rng.normal(10, 2, n), 2), "t": np.tile([0.0, 1.0, 2.0], n // 3),
                         "g": np.repeat([f"s{i}" for i in range(n // 3)], 3)})


def clean_text() -> str:
    return table().to_csv(index=False)


def with_text_cells(cells: dict[int, str]) -> str:
    """The clean table with some of y's cells (by row) replaced by text."""
    data = table().astype({"y": object})
    for row, value in cells.items():
        data.loc[row, "y"] = value
    return data.to_csv(index=False)


def replace_line(text: str, line: int, new: str) -> str:
    lines = text.splitlines()
    lines[line - 1] = new
    return "\n".join(lines) + "\n"


def write_bytes(content: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / "data.csv"
        path.write_bytes(content)
        return path
    return make


def write_text(content: str, name: str = "data.csv") -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_text(content, encoding="utf-8")
        return path
    return make


def directory(folder: Path) -> Path:
    path = folder / "data.csv"
    path.mkdir()
    return path


def passwd(folder: Path) -> Path:
    system = Path("/etc/passwd")
    text = system.read_text() if system.is_file() else "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin\n"
    path = folder / "passwd"
    path.write_text(text)
    return path


def mislabelled_gzip(folder: Path) -> Path:
    path = folder / "data.csv"
    path.write_bytes(gzip.compress(clean_text().encode()))
    return path


def not_gzip(folder: Path) -> Path:
    path = folder / "data.csv.gz"
    path.write_text(clean_text())
    return path


# (id, how to make the file, words every message must hold); each message also names the file and has a Fix.
BAD_FILES: list[tuple[str, Callable[[Path], Path], tuple[str, ...]]] = [
    ("empty", write_bytes(b""), ("is empty",)),
    ("blank lines only", write_bytes(b"\n\n  \n"), ("is empty",)),
    ("byte-order mark only", write_bytes(b"\xef\xbb\xbf\n\n"), ("is empty",)),
    ("header only", write_text("y,t,g\n"), ("header line but no rows", "['y', 't', 'g']")),
    ("one field too many", write_text(replace_line(clean_text(), 5, "1.5,2,s1,99")),
     ("line 5", "4 fields", "header has 3")),
    ("one field too few", write_text(replace_line(clean_text(), 7, "1.5,2")), ("line 7", "2 fields", "header has 3")),
    ("unclosed quote", write_text(replace_line(clean_text(), 4, '"1.5,2,s1')), ("quote",)),
    ("latin-1", write_bytes("y,t,g\n1,0,café\n2,1,crème\n".encode("latin-1")),
     ("not UTF-8", "line 2", "Re-encode", "iconv")),
    ("binary", write_bytes(bytes(range(256)) * 8), ("binary", "NUL")),
    ("executable", write_bytes(b"\x7fELF\x02\x01\x01" + bytes(200)), ("an executable", "not a CSV")),
    ("xlsx", write_bytes(b"PK\x03\x04" + bytes(100)), ("zip archive", "xlsx")),
    ("gzip named .csv", mislabelled_gzip, ("gzip-compressed", ".csv.gz")),
    ("text named .csv.gz", not_gzip, ("cannot be read", "gz")),
    ("directory", directory, ("is a directory",)),
    ("/etc/passwd", passwd, ("not a comma-separated table", "colons", "line 1")),
    ("semicolons", write_text("y;t;g\n1,5;0;a\n2,5;1;b\n"), ("not a comma-separated table", "semicolons")),
    ("text cells in a numeric column", write_text(with_text_cells({4: "oops", 11: "?"})),
     ("Column 'y'", "line 6: 'oops'", "line 13: '?'", "factor with", "na_values=['?', 'oops']", "factors=['y']")),
]


def _ids(cases: list) -> list[str]:
    return [case[0] for case in cases]


@pytest.mark.parametrize(("name", "make", "words"), BAD_FILES, ids=_ids(BAD_FILES))
def test_read_csv_refuses_malformed_files(tmp_path: Path, name: str, make: Callable[[Path], Path],
                                          words: tuple[str, ...]) -> None:
    path = make(tmp_path)
    with pytest.raises(DataError) as info:
        read_csv(path)
    message = str(info.value)
    assert str(path) in message and "Fix:" in message
    for word in words:
        assert word in message, (word, message)


@pytest.mark.parametrize(("name", "make", "words"), BAD_FILES, ids=_ids(BAD_FILES))
def test_cli_refuses_malformed_files_in_one_line(tmp_path: Path, name: str, make: Callable[[Path], Path],
                                                 words: tuple[str, ...]) -> None:
    path = make(tmp_path)
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        code = main(["fit", "--data", str(path), "--formula", FORMULA])
    assert code == 2
    text = err.getvalue()
    assert text.startswith("hierlmm: error:") and "Traceback" not in text
    assert str(path) in text and words[0] in text


def test_model_file_data_path_is_checked_too(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text(replace_line(clean_text(), 5, "1.5,2,s1,99"))
    (tmp_path / "m.toml").write_text(f'[model]\nformula = "{FORMULA}"\n[data]\nname = "d.csv"\n')
    with pytest.raises(DataError, match="line 5: 4 fields"):
        hierlmm.load_spec(tmp_path / "m.toml").load_data()
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        assert main(["fit", str(tmp_path / "m.toml")]) == 2
    assert err.getvalue().startswith("hierlmm: error:") and "line 5" in err.getvalue()


def test_a_text_cell_no_longer_reaches_the_fit_as_a_factor(tmp_path: Path) -> None:
    """Before: y became a 29-level factor and the fit complained about its response; now the file is refused and
    the two ways out work."""
    path = tmp_path / "d.csv"
    path.write_text(with_text_cells({4: "oops"}))
    with pytest.raises(DataError, match="Column 'y'.*line 6: 'oops'"):
        hierlmm.fit(FORMULA, read_csv(path))
    data = read_csv(path, na_values=["oops"])
    assert data["y"].dtype == float and data["y"].isna().sum() == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = hierlmm.fit(FORMULA, data)
    assert fit.design.n_obs == 29
    assert isinstance(read_csv(path, factors=["y"])["y"].dtype, pd.CategoricalDtype)


def test_factor_columns_with_a_few_numeric_levels_stay_factors(tmp_path: Path) -> None:
    """R's read.csv makes a column of "10", "20", "placebo" a factor; so does read_csv (few distinct numbers)."""
    data = table()
    data["dose"] = np.resize(["10", "20", "placebo"], len(data))
    path = tmp_path / "d.csv"
    data.to_csv(path, index=False)
    read = read_csv(path)
    assert list(read["dose"].cat.categories) == ["10", "20", "placebo"]


def test_missing_file_and_wrong_argument(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="not found"):
        read_csv(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="string or a pathlib.Path"):
        read_csv(None)  # type: ignore[arg-type]
    (tmp_path / "d.csv").write_text(clean_text())
    with pytest.raises(DataError, match="factors= names"):
        read_csv(tmp_path / "d.csv", factors=["nope"])


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".csv.bz2"])
def test_clean_files_still_read_as_r_reads_them(tmp_path: Path, suffix: str) -> None:
    text = clean_text().encode()
    path = tmp_path / f"d{suffix}"
    path.write_bytes({".csv": text, ".csv.gz": gzip.compress(text), ".csv.bz2": bz2.compress(text)}[suffix])
    data = read_csv(path)
    assert list(data.columns) == ["y", "t", "g"] and len(data) == 30
    assert data["y"].dtype == float and isinstance(data["g"].dtype, pd.CategoricalDtype)
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + text)  # Excel's UTF-8 with a byte-order mark
    assert list(read_csv(tmp_path / "bom.csv").columns) == ["y", "t", "g"]
    quoted = tmp_path / "quoted.csv"  # R's write.csv: every string quoted, a comma inside one
    quoted.write_text('"y","t","g"\n1.5,0,"a, b"\n2.5,1,"c"\n')
    assert read_csv(quoted)["g"].tolist() == ["a, b", "c"]
    rownames = tmp_path / "rownames.csv"  # a header one field short: the first column is row names, as in R
    rownames.write_text("y,t\n1,1.5,0\n2,2.5,1\n")
    assert read_csv(rownames)["y"].tolist() == [1.5, 2.5]


CSV_PIECES = st.sampled_from(["a", "1", "2.5", ",", '"', "\n", "\r\n", " ", "NA", "?", ";", "é", "\t", '""', "x,y",
                              "-", "e5", "TRUE"])


@settings(max_examples=300, deadline=None)
@given(content=st.one_of(st.binary(max_size=120), st.lists(CSV_PIECES, max_size=60).map(lambda p: "".join(p).encode())))
def test_any_bytes_give_a_table_or_a_hierlmm_error(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "d.csv"
        path.write_bytes(content)
        try:
            data = read_csv(path)
        except HierlmmError:
            return
        assert isinstance(data, pd.DataFrame) and len(data) > 0 and data.shape[1] >= 2
