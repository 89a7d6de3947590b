"""hierlmm.save and hierlmm.load, and pickling, for every kind of fit (those of tests/test_fit_interface.py): the fit
read back is of the same class and every method and function of fits gives the same numbers, exactly; files that
are not saved fits, missing paths and classes hierlmm does not know are refused with hierlmm errors.
"""

from __future__ import annotations

import dataclasses
import pickle
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from simulated import every_kind, simulate
from test_fit_interface import BAYES_KINDS, FAST, REML_KINDS

import hierlmm
from hierlmm.report.fit_files import CLASSES, FIT_CLASSES
from hierlmm.report.summaries import save_fit, to_dict

FIXED = "y ~ t + x"
KINDS: dict[str, Callable[[pd.DataFrame], Any]] = {
    **{f"reml-{name}": make for name, make in REML_KINDS.items()},
    **{f"bayes-{name}": make for name, make in BAYES_KINDS.items()},
    # structured D (the spec's text in nlme's terms), and the Bayesian kinds with more to rebuild
    "reml-pdblocked": lambda d: hierlmm.fit(FIXED, d, random={"id": hierlmm.pdBlocked(
        [hierlmm.pdIdent("~ 1"), hierlmm.pdDiag("~ 0 + t")])}),
    "reml-pdcompsymm": lambda d: hierlmm.fit(FIXED, d, random={"id": hierlmm.pdCompSymm("~ t")}, method="ML"),
    "bayes-joint": lambda d: hierlmm.fit_bayes(hierlmm.build_design(hierlmm.model_spec(
        FIXED, random={"id": hierlmm.pdIdent("~ t")}), d), sampler="joint", centered="id:(Intercept)", **FAST),
    "bayes-heteroscedastic": lambda d: hierlmm.fit_bayes(hierlmm.build_design(hierlmm.model_spec(
        f"{FIXED} + (t | id)"), d), data=d, weights="varIdent(form = ~ 1 | g)", priors={"sigma": 2.0}, **FAST),
}


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return every_kind()


@pytest.fixture(scope="module", params=list(KINDS))
def kind_fit(request, data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = KINDS[request.param](data)
    return request.param, fit, outputs(fit, data)


def _call(function: Callable[[], Any]) -> Any:
    """The value of a call, or what it refused (class and message): a refusal must be the same after loading."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return function()
    except hierlmm.HierlmmError as error:
        return ("refused", type(error).__name__, str(error))


def outputs(fit: Any, data: pd.DataFrame) -> dict[str, Any]:
    """Every method of the fit and every function of fits that takes it, on fixed inputs."""
    design = fit.design
    rows = data.iloc[design.rows[:9]]
    first = design.blocks[0].levels[0]
    history = data[data["id"] == first].assign(id="znew")  # a new subject's past outcomes
    later = history.assign(t=history["t"] + 0.37)
    bayes = isinstance(fit, hierlmm.BayesResult)
    seed = {"seed": 1} if bayes else {}  # a Bayesian prediction's draws of new effects and outcomes
    calls: dict[str, Callable[[], Any]] = {
        "class": lambda: type(fit),
        "summary": fit.summary,
        "printout": lambda: hierlmm.summary(fit, "simulated"),
        "fixef": fit.fixef,
        "varcorr": fit.varcorr,
        "ranef": fit.ranef,
        "beta": lambda: fit.beta,
        "cov_beta": lambda: fit.cov_beta,
        "D": lambda: fit.D,
        "sigma": lambda: fit.sigma,
        "loglik": lambda: fit.loglik,
        "aic": lambda: (fit.aic, fit.bic),
        "predict 0": lambda: hierlmm.predict(fit, rows, level=0, **seed),
        "predict 0 prediction": lambda: hierlmm.predict(fit, rows, level=0, interval="prediction", **seed),
        "predict 1": lambda: hierlmm.predict(fit, rows, level=1, **seed),
        "predict 1 history": lambda: hierlmm.predict(fit, later, level=1, interval="prediction", history=history,
                                                     **seed),
        "predict 1 training history": lambda: hierlmm.predict(fit, rows.assign(t=rows["t"] + 0.37), level=1,
                                                              interval="prediction", history=data, **seed),
        "trajectories 0": lambda: hierlmm.trajectories(fit, rows, level=0, **seed),
        "trajectories 1": lambda: hierlmm.trajectories(fit, rows, level=1, predictive=True, **seed),
        "trajectories 1 history": lambda: hierlmm.trajectories(fit, rows.assign(t=rows["t"] + 0.37), level=1,
                                                               predictive=True, history=data, **seed),
        "implied covariance": lambda: hierlmm.implied_covariance(fit, subject=first),
        "implied covariance rows": lambda: hierlmm.implied_covariance(fit, rows=later),
        "effects": lambda: hierlmm.effects(fit, "t", n=7),
        "effects by": lambda: hierlmm.effects(fit, "x", by="t", by_values=[1.0, 3.0], n=5),
        "anova": lambda: hierlmm.anova(fit),
        "anova marginal satterthwaite": lambda: hierlmm.anova(fit, type="marginal", ddf="satterthwaite"),
        "anova kenward-roger": lambda: hierlmm.anova(fit, type="marginal", ddf="kenward-roger"),
        "new model matrices": lambda: hierlmm.new_model_matrices(design, later),
    }
    for level in (0, 1):
        calls[f"fitted {level}"] = lambda level=level: fit.fitted(level)
        for kind in ("response", "pearson", "normalized"):
            calls[f"residuals {level} {kind}"] = lambda level=level, kind=kind: fit.residuals(level, kind)
    if bayes:
        calls["diagnostics"] = fit.diagnostics
        calls["contrast"] = lambda: hierlmm.contrast(fit, {"t + x": {"t": 1.0, "x": 1.0}})
        calls["variance components"] = lambda: hierlmm.variance_components(fit, prior_draws=200)
    else:
        calls["fixef satterthwaite"] = lambda: fit.fixef(ddf="satterthwaite")
        calls["json"] = lambda: to_dict(fit)
    return {name: _call(call) for name, call in calls.items()}


def assert_same(a: Any, b: Any, where: str = "") -> None:
    """``a`` and ``b`` hold the same values, exactly (NaN equal to NaN)."""
    assert type(a) is type(b), f"{where}: {type(a)} against {type(b)}"
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=where)
    elif isinstance(a, pd.Series):
        pd.testing.assert_series_equal(a, b, check_exact=True, obj=where)
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, xr.DataTree):
        xr.testing.assert_identical(a, b)
    elif dataclasses.is_dataclass(a) and not isinstance(a, type):
        for field in dataclasses.fields(a):
            assert_same(getattr(a, field.name), getattr(b, field.name), f"{where}.{field.name}")
    elif isinstance(a, Mapping):
        assert list(a) == list(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{k}]")
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), where
    else:
        assert a == b, where


def assert_same_outputs(expected: dict[str, Any], fit: Any, data: pd.DataFrame) -> None:
    got = outputs(fit, data)
    for name, value in expected.items():
        assert_same(value, got[name], name)


@pytest.mark.parametrize("fmt", ["netcdf", "zarr"])
def test_save_and_load_give_the_same_fit(kind_fit, data, fmt, tmp_path):
    name, fit, expected = kind_fit
    path = hierlmm.save(fit, tmp_path / ("fit.nc" if fmt == "netcdf" else "fit.zarr"))
    assert path.exists()
    back = hierlmm.load(path)
    assert type(back) is type(fit)
    assert_same(fit.design.spec, back.design.spec, "spec")
    for field in ("y", "X", "rows", "fixef_names", "assign", "state", "levels", "covariates", "response_name",
                  "missing"):
        assert_same(getattr(fit.design, field), getattr(back.design, field), field)
    for block, again in zip(fit.design.blocks, back.design.blocks, strict=True):
        assert_same(block, again, "block")
    if name.startswith("bayes"):
        xr.testing.assert_identical(back.tree, fit.tree)
        assert back.tree["sample_stats"]["divergence_message"].dtype == fit.tree["sample_stats"][
            "divergence_message"].dtype
    assert_same_outputs(expected, back, data)


def test_explicit_format_and_a_saved_reml_fit_holds_no_tree(kind_fit, tmp_path):
    name, fit, _ = kind_fit
    path = hierlmm.save(fit, tmp_path / "fit.store", format="zarr")
    assert (path / "zarr.json").exists() or (path / ".zgroup").exists()
    tree = xr.open_datatree(path, engine="zarr")
    expected = {"hierlmm"} | (set(fit.tree.children) if name.startswith("bayes") else set())
    assert set(tree.children) == expected and (not name.startswith("bayes") or "posterior" in expected)
    assert tree["hierlmm"].attrs["hierlmm_class"] == type(fit).__name__
    assert tree["hierlmm"].attrs["hierlmm_format"] == "hierlmm.fit"
    with pytest.raises(hierlmm.SpecError, match="netcdf"):
        hierlmm.save(fit, tmp_path / "fit.pkl", format="pickle")


def test_pickling_gives_the_same_fit(kind_fit, data):
    _, fit, expected = kind_fit
    back = pickle.loads(pickle.dumps(fit))
    assert type(back) is type(fit)
    assert_same_outputs(expected, back, data)


def test_the_cli_out_folder_of_a_nuts_fit_loads(data, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = BAYES_KINDS["hierarchical"](data)  # (save_fit's posterior predictive plot is not drawn for
    expected = outputs(fit, data)  # the marginal model's fits)
    for fmt in ("netcdf", "zarr"):
        saved = save_fit(fit, tmp_path / fmt, tree_format=fmt)
        assert any(p.name.startswith("posterior.") for p in saved)
        back = hierlmm.load(tmp_path / fmt)
        assert type(back) is type(fit)
        assert_same_outputs(expected, back, data)


def test_load_refuses_what_is_not_a_saved_fit(data, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = REML_KINDS["plain"](data)
    with pytest.raises(hierlmm.FitFileError, match="no saved fit"):
        hierlmm.load(tmp_path / "missing.nc")
    (tmp_path / "text.nc").write_text("not a netCDF file")
    with pytest.raises(hierlmm.FitFileError, match="not a netCDF"):
        hierlmm.load(tmp_path / "text.nc")
    xr.Dataset({"y": ("obs", np.arange(3.0))}).to_netcdf(tmp_path / "other.nc", engine="h5netcdf")
    with pytest.raises(hierlmm.FitFileError, match="not a saved hierlmm fit"):
        hierlmm.load(tmp_path / "other.nc")
    (tmp_path / "empty").mkdir()
    with pytest.raises(hierlmm.FitFileError, match="holds no saved fit"):
        hierlmm.load(tmp_path / "empty")
    with pytest.raises(hierlmm.NotSupportedError, match="Only hierlmm's fits"):
        hierlmm.save(object(), tmp_path / "object.nc")

    path = hierlmm.save(fit, tmp_path / "fit.nc")
    tree = xr.open_datatree(path, engine="h5netcdf").load()

    def tampered(edit: Callable[[xr.DataTree], None]) -> str:
        copy = tree.copy()
        edit(copy)
        out = tmp_path / f"tampered{len(list(tmp_path.iterdir()))}.nc"
        copy.to_netcdf(out, engine="h5netcdf")
        return out

    unknown = tampered(lambda t: t["hierlmm"].attrs.update(hierlmm_class="os.system"))
    with pytest.raises(hierlmm.FitFileError, match="kind of fit that this hierlmm does not know"):
        hierlmm.load(unknown)
    nested = tampered(lambda t: t["hierlmm/layout"].attrs.update(hierlmm_class="subprocess.Popen"))
    with pytest.raises(hierlmm.FitFileError, match="class that this hierlmm does not know"):
        hierlmm.load(nested)
    newer = tampered(lambda t: t["hierlmm"].attrs.update(hierlmm_format_version=99))
    with pytest.raises(hierlmm.FitFileError, match="newer"):
        hierlmm.load(newer)
    lacking = tampered(lambda t: t["hierlmm"].attrs.pop("method"))
    with pytest.raises(hierlmm.FitFileError, match="lacks its field 'method'"):
        hierlmm.load(lacking)
    assert issubclass(hierlmm.FitFileError, hierlmm.HierlmmError)


def test_the_registry_names_each_class_once():
    assert all(CLASSES[cls.__name__] is cls for cls in FIT_CLASSES)
    assert len({cls.__name__ for cls in CLASSES.values()}) == len(CLASSES)


def test_a_design_with_stateful_transforms_and_factors_round_trips(tmp_path):
    pbc2 = hierlmm.datasets.load("pbc2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = hierlmm.fit("log(serBilir) ~ ns(year, 2) * sex + poly(age, 2) + scale(albumin)", pbc2,
                          random={"id": hierlmm.pdDiag("~ year")})
    back = hierlmm.load(hierlmm.save(fit, tmp_path / "pbc2.nc"))
    assert_same(fit.design.state, back.design.state, "state")
    assert_same(fit.design.levels, back.design.levels, "levels")
    new = pbc2.iloc[:20]
    assert_same(hierlmm.new_model_matrices(fit.design, new), hierlmm.new_model_matrices(back.design, new), "X, Z")
    assert_same(hierlmm.predict(fit, new, level=1).table, hierlmm.predict(back, new, level=1).table, "predict")
    assert_same(hierlmm.effects(fit, "year", by="sex").table, hierlmm.effects(back, "year", by="sex").table,
                "effects")
    assert back.summary() == fit.summary()


def test_data_columns_of_python_objects_and_categories_round_trip(tmp_path):
    frame = simulate(3, 30)
    frame["grp"] = pd.Categorical([k % 3 for k in range(len(frame))])
    frame["idn"] = frame["id"].str[1:].astype(int).astype(object)  # Python ints in an object column
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = hierlmm.fit("y ~ t + factor(grp) + (1 | idn)", frame)
    back = hierlmm.load(hierlmm.save(fit, tmp_path / "objects.nc"))
    assert_same(fit.design.covariates, back.design.covariates, "covariates")
    assert type(back.design.covariates["idn"][0]) is int
    rows = frame.iloc[:12]
    assert_same(hierlmm.predict(fit, rows, level=1).table, hierlmm.predict(back, rows, level=1).table, "predict")
    assert back.summary() == fit.summary()
