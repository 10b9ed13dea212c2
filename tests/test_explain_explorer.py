"""The offline explorer page: its data, its script (run in a real JavaScript engine, V8 through
mini-racer, since no headless browser can be installed here) and its errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from explain_helpers import shared_run
from flax import nnx
from fs_helpers import unwritable
from py_mini_racer import MiniRacer

from hepgan.data.types import Showers
from hepgan.explain import explorer as ex

ENERGIES = np.array([10.0, 50.0, 200.0])
STEPS = np.array([-2.0, 0.0, 2.0])
GRID = (4, 5, 6)


def synthetic(
    *, angle: bool = False, reference: bool = True, seed: int = 0
) -> tuple[ex.ExplorerData, np.ndarray]:
    """A hand-built ExplorerData over random cells ``[nE, nT, 2, 3, 4, 5, 6]`` GeV (returned too), with one
    known shower: grid point (1, 0, 0, 1) holds 0.5 GeV in the single cell (2, 3, 4)."""
    rng = np.random.default_rng(seed)
    thetas = np.array([70.0, 90.0, 110.0]) if angle else np.array([90.0])
    shape = (ENERGIES.size, thetas.size, 2, STEPS.size)
    cells = (rng.gamma(0.5, 0.02, size=(*shape, *GRID)) * (rng.random((*shape, *GRID)) > 0.3)).astype(
        np.float32
    )
    cells[1, 0, 0, 1] = 0.0
    cells[1, 0, 0, 1, 2, 3, 4] = 0.5
    energy = np.broadcast_to(ENERGIES[:, None, None, None], shape)
    s = ex.summarize(cells, energy)
    ref = None
    if reference:
        n = 40
        ref_cells = rng.gamma(0.5, 0.02, size=(n, *GRID)).astype(np.float32)
        ref_e = rng.choice([11.0, 45.0, 60.0, 190.0], size=n)
        ref_t = np.radians(rng.choice(thetas, size=n)) if angle else None
        ref = ex.reference_means(Showers(ref_cells, ref_e.astype(np.float32), ref_t), ENERGIES, thetas)
    data = ex.ExplorerData(
        energies=ENERGIES,
        thetas_deg=thetas,
        direction_names=["sf", "noise[1]"],
        direction_r2=[0.75, None],
        steps=STEPS,
        angle_model=angle,
        info={"arch": "angle51" if angle else "fixed25", "size": "tiny", "step": 3, "seed": 0},
        reference=ref,
        **s,
    )
    return data, cells


def script_of(page: str) -> str:
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert len(scripts) == 1
    return scripts[0]


def js_context(page: str) -> MiniRacer:
    """The page's script evaluated in V8 (no DOM: the drawing part is skipped)."""
    ctx = MiniRacer()
    ctx.eval(script_of(page))
    return ctx


def js(ctx: MiniRacer, expr: str) -> Any:
    return json.loads(ctx.eval(f"JSON.stringify({expr})"))


def js_state(ctx: MiniRacer, call: str) -> dict[str, Any] | None:
    return js(
        ctx,
        f"(function () {{ var s = {call}; return s === null ? null : {{xy: Array.from(s.xy), "
        "yz: Array.from(s.yz), lateral: s.lateral, longitudinal: s.longitudinal, eVis: s.eVis, "
        "sf: s.samplingFraction, depth: s.depth, energy: s.energy, count: s.count}; })()",
    )


def check_point(st: dict[str, Any], want: dict[str, Any], rtol: float) -> None:
    x, y, z = want["grid"]
    np.testing.assert_allclose(np.reshape(st["xy"], (x, y)), want["xy"], rtol=rtol, atol=1e-30)
    np.testing.assert_allclose(np.reshape(st["yz"], (y, z)), want["yz"], rtol=rtol, atol=1e-30)
    np.testing.assert_allclose(st["longitudinal"], want["longitudinal"], rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(st["lateral"], want["lateral"], rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(st["eVis"], want["e_vis"], rtol=rtol)
    np.testing.assert_allclose(st["sf"], want["sampling_fraction"], rtol=rtol)
    np.testing.assert_allclose(st["depth"], want["depth"], rtol=rtol, atol=1e-9)


def want_at(data: ex.ExplorerData, idx: tuple[int, ...], source: Any = None) -> dict[str, Any]:
    src = data if source is None else source
    names = ("xy", "yz", "longitudinal", "lateral", "e_vis", "sampling_fraction", "depth")
    return {"grid": data.grid, **{k: np.asarray(getattr(src, k))[idx] for k in names}}


def check_self_contained(page: str) -> None:
    low = page.lower()
    for bad in ("http://", "https://", "src=", "fetch(", "xmlhttprequest", "<link", "import(", "//cdn"):
        assert bad not in low, bad


# --------------------------------------------------------------------------------------------------------
# hand-built data
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("encoding", "rtol"), [("float32", 1e-6), ("log16", 3e-4)])
@pytest.mark.parametrize("angle", [False, True])
def test_page_decodes_to_the_python_arrays(tmp_path: Path, encoding: str, rtol: float, angle: bool) -> None:
    data, _ = synthetic(angle=angle)
    path = ex.write_explorer(data, tmp_path / "sub" / "explorer.html", encoding=encoding)
    page = path.read_text()
    check_self_contained(page)
    ctx = js_context(page)  # loads without error
    meta = js(ctx, "EXPLORER_META")
    assert meta["encoding"] == encoding and meta["grid"] == list(GRID)
    nt = data.thetas_deg.size
    for idx in [(0, 0, 0, 0), (1, nt - 1, 1, 2), (2, nt // 2, 0, 1), (2, 0, 1, 0)]:
        st = js_state(ctx, f"stateFor({', '.join(map(str, idx))})")
        assert st is not None and st["energy"] == data.energies[idx[0]]
        check_point(st, want_at(data, idx), rtol)
    ref = data.reference
    assert ref is not None
    for e in range(3):
        for t in range(nt):
            st = js_state(ctx, f"referenceFor({e}, {t})")
            if ref.count[e, t] == 0:
                assert st is None
                continue
            assert st is not None and st["count"] == ref.count[e, t]
            np.testing.assert_allclose(st["energy"], ref.energy[e, t], rtol=1e-12)
            check_point(st, want_at(data, (e, t), ref), rtol)


def test_known_shower_numbers(tmp_path: Path) -> None:
    """0.5 GeV in cell (2, 3, 4) at 50 GeV: E_vis 0.5, E_vis/E 0.01, depth 4, in Python and on the page."""
    data, _ = synthetic()
    assert data.e_vis[1, 0, 0, 1] == pytest.approx(0.5)
    assert data.sampling_fraction[1, 0, 0, 1] == pytest.approx(0.01)
    assert data.depth[1, 0, 0, 1] == pytest.approx(4.0)
    ctx = js_context(ex.render_page(data, encoding="float32"))
    st = js_state(ctx, "stateFor(1, 0, 0, 1)")
    assert st is not None
    assert st["eVis"] == pytest.approx(0.5, rel=1e-12)
    assert st["sf"] == pytest.approx(0.01, rel=1e-12)
    assert st["depth"] == pytest.approx(4.0, rel=1e-12)
    assert st["longitudinal"] == [0, 0, 0, 0, 0.5, 0] and st["lateral"] == [0, 0, 0.5, 0]
    # an empty shower: numbers 0, not NaN
    cells = np.zeros((1, *GRID), np.float32)
    s = ex.summarize(cells, np.array([10.0]))
    assert s["depth"][0] == 0.0 and s["sampling_fraction"][0] == 0.0


@pytest.mark.parametrize("angle", [False, True])
def test_sliders_match_the_grid(angle: bool) -> None:
    data, _ = synthetic(angle=angle, reference=False)
    ctx = js_context(ex.render_page(data))
    specs = {s["key"]: s for s in js(ctx, "sliderSpecs()")}
    assert list(specs) == (["energy", "theta", "dir0", "dir1"] if angle else ["energy", "dir0", "dir1"])
    e = specs["energy"]
    assert (e["min"], e["max"], e["values"], e["scale"]) == (10.0, 200.0, ENERGIES.tolist(), "log")
    assert e["initial"] in ENERGIES
    if angle:
        t = specs["theta"]
        assert (t["min"], t["max"], t["values"], t["initial"]) == (70.0, 110.0, [70.0, 90.0, 110.0], 90.0)
    for k, name in enumerate(data.direction_names):
        d = specs[f"dir{k}"]
        assert (d["min"], d["max"], d["values"], d["initial"]) == (-2.0, 2.0, STEPS.tolist(), 0.0)
        assert d["label"].startswith(name)
    assert "0.75" in specs["dir0"]["label"]
    # the sliders snap to the nearest grid point, in log E for the energy (as nearest_index)
    probes = [9.0, 22.0, 23.0, 31.6, 99.0, 101.0, 1000.0]  # 22.36, 100: the midpoints
    got = [js(ctx, f'nearestIndex(EXPLORER_META.energies, {v}, "log")') for v in probes]
    assert got == ex.nearest_index(ENERGIES, np.array(probes), log=True).tolist() == [0, 0, 1, 1, 1, 2, 2]
    # theta 100 is as near 90 as 110: the lower index; dir0 0.2 snaps to 0, so dir1 is the one shown
    got = js(ctx, "indicesFor({energy: 23, theta: 100, dir0: 0.2, dir1: 1.2})")
    assert got == {"e": 1, "t": 1 if angle else 0, "d": 1, "s": 2}
    assert js(ctx, "indicesFor({energy: 200, dir0: -1.5, dir1: 0})") == {"e": 2, "t": 0, "d": 0, "s": 0}
    assert js(ctx, "indicesFor({energy: 10, dir0: 0, dir1: 0})") == {"e": 0, "t": 0, "d": 0, "s": 1}


def test_page_is_self_contained_and_escaped(tmp_path: Path) -> None:
    data, _ = synthetic()
    data.info["run_dir"] = "/runs/</script><script>alert(1)</script>"
    data.direction_names[0] = "<b>sf</b>"
    page = ex.write_explorer(data, tmp_path / "e.html", title="a </script> & <title>").read_text()
    check_self_contained(page)
    assert page.count("<script>") == 1 and page.count("</script>") == 1
    assert "<title>a &lt;/script&gt; &amp; &lt;title&gt;</title>" in page
    ctx = js_context(page)
    assert js(ctx, "EXPLORER_META.info.run_dir") == data.info["run_dir"]
    assert js(ctx, "EXPLORER_META.directions[0].name") == "<b>sf</b>"
    # the grid is documented on the page
    assert "nearest precomputed point" in page and "plus" in page
    # the DOM part is guarded: a stub document would be needed to run it, and none is used here
    assert 'if (typeof document !== "undefined")' in page


DOM_STUB = """
var STUB = {elements: {}};
function stubContext(canvas) {
  var noop = function () {};
  return {fillStyle: "", strokeStyle: "", font: "", textAlign: "", lineWidth: 1,
          createImageData: function (w, h) {
            return {width: w, height: h, data: new Uint8ClampedArray(4 * w * h)};
          },
          putImageData: function (img) { canvas.image = img; },
          fillRect: noop, strokeRect: noop, fillText: noop, beginPath: noop, moveTo: noop, lineTo: noop,
          stroke: noop, setLineDash: noop};
}
function stubElement(tag) {
  return {tagName: tag, attrs: {}, children: [], listeners: {}, hidden: false, className: "", textContent: "",
          innerHTML: "", value: "", disabled: false, width: 0, height: 0,
          setAttribute: function (k, v) { this.attrs[k] = v; if (k === "id") STUB.elements[v] = this; },
          appendChild: function (c) { this.children.push(c); return c; },
          addEventListener: function (type, f) { this.listeners[type] = f; },
          getContext: function () { return stubContext(this); }};
}
var document = {
  getElementById: function (id) { return STUB.elements[id] || (STUB.elements[id] = stubElement("div")); },
  createElement: function (tag) { return stubElement(tag); }
};
"""


def test_drawing_code_runs_on_a_stub_document() -> None:
    """The DOM half of the script, against a minimal stub document: it builds the sliders, draws without
    an error, and moving a direction slider puts the other one back to 0."""
    data, _ = synthetic(angle=True)
    ctx = MiniRacer()
    ctx.eval(DOM_STUB)
    ctx.eval(script_of(ex.render_page(data)))
    el = "STUB.elements"
    assert js(ctx, f'{el}["error"].textContent') == ""
    assert js(ctx, f'Object.keys({el}).filter(function (k) {{ return k.indexOf("slider-") === 0; }})') == [
        "slider-energy",
        "slider-theta",
        "slider-dir0",
        "slider-dir1",
    ]
    assert js(ctx, f'[{el}["map-xy"].width, {el}["map-xy"].height, {el}["map-yz"].width]') == [
        240,
        300,
        300,
    ]  # 60, 50 px cells
    # drawn: some cells coloured, the reference shown at the initial energy (50 GeV has events)
    assert js(ctx, f'Array.from({el}["map-xy"].image.data).some(function (v) {{ return v < 255; }})')
    assert js(ctx, f'{el}["ref-maps-xy"].hidden') is False
    ctx.eval(f'{el}["slider-dir0"].value = "1.1"; {el}["slider-dir0"].listeners.input();')
    st = js_state(ctx, "stateFor(1, 1, 0, 2)")
    assert st is not None and f"{st['sf']:.4g}" in js(ctx, f'{el}["numbers"].innerHTML')
    ctx.eval(f'{el}["slider-dir1"].value = "-2"; {el}["slider-dir1"].listeners.input();')
    assert js(ctx, f'{el}["slider-dir0"].value') == "0"
    st = js_state(ctx, "stateFor(1, 1, 1, 0)")
    assert st is not None and f"{st['sf']:.4g}" in js(ctx, f'{el}["numbers"].innerHTML')
    assert js(ctx, f'{el}["error"].textContent') == ""


def test_clear_errors(tmp_path: Path) -> None:
    data, _ = synthetic(reference=False)
    bad = unwritable(tmp_path) / "explorer.html"
    with pytest.raises(OSError, match=re.escape(str(bad))):
        ex.write_explorer(data, bad)
    with pytest.raises(FileNotFoundError, match=re.escape("manifest.json")):
        ex.precompute(tmp_path)
    with pytest.raises(ValueError, match=re.escape("ExplorerData.xy")):
        ex.ExplorerData(**{**vars(data), "xy": data.xy[:, :, :, :2]})
    with pytest.raises(ValueError, match=re.escape("ExplorerData.steps")):
        ex.ExplorerData(**{**vars(data), "steps": np.array([-1.0, 1.0, 2.0])})
    with pytest.raises(ValueError, match="encoding"):
        ex.render_page(data, encoding="png")
    ctx = js_context(ex.render_page(data))
    with pytest.raises(Exception, match=re.escape("outside 0..2")):
        ctx.eval("stateFor(3, 0, 0, 0)")
    assert js(ctx, "referenceFor(0, 0)") is None  # no reference set


def test_log16_encoding_bounds() -> None:
    a = np.array([0.0, 1e-20, 1e-9, 1e-3, 0.5, 3.0], np.float32)
    text, spec = ex.encode_array(a, "log16")
    ctx = js_context(ex.render_page(synthetic(reference=False)[0], encoding="log16"))
    ctx.eval(f"EXPLORER_META.blobs.t = {json.dumps(spec)}; EXPLORER_BLOBS.t = {json.dumps(text)};")
    got = np.asarray(js(ctx, 'Array.from(decodeBlob("t"))'))
    # values more than 12 decades below the largest are dropped to 0; the others within 2.4e-4
    np.testing.assert_allclose(got, [0.0, 0.0, 1e-9, 1e-3, 0.5, 3.0], rtol=2.4e-4)


def test_reference_means_group_by_nearest_condition() -> None:
    cells = np.zeros((4, *GRID), np.float32)
    cells[0, 0, 0, 0] = 1.0  # 12 GeV -> 10
    cells[1, 0, 0, 2] = 3.0  # 8 GeV -> 10
    cells[2, 1, 1, 5] = 2.0  # 60 GeV -> 50
    cells[3, 1, 1, 5] = 4.0  # 1000 GeV -> 200
    ref = ex.reference_means(
        Showers(cells, np.array([12.0, 8.0, 60.0, 1000.0], np.float32)), ENERGIES, [90.0]
    )
    assert ref.count[:, 0].tolist() == [2, 1, 1]
    np.testing.assert_allclose(ref.energy[:, 0], [10.0, 60.0, 1000.0])
    np.testing.assert_allclose(ref.e_vis[:, 0], [2.0, 2.0, 4.0])
    np.testing.assert_allclose(ref.depth[:, 0], [1.5, 5.0, 5.0])
    np.testing.assert_allclose(ref.sampling_fraction[:, 0], [0.2, 2.0 / 60.0, 0.004])
    np.testing.assert_allclose(ref.xy[0, 0, 0, 0], 2.0)


def test_directions_from_dissect_json(tmp_path: Path) -> None:
    path = tmp_path / "dissect.json"
    path.write_text(
        json.dumps(
            {
                "latent_directions": {
                    "depth": {"vector": [0.0, 2.0, 0.0], "r2": 0.3},
                    "sf": {"vector": [3.0, 0.0, 4.0], "r2": 0.9},
                    "width": {"vector": [1.0, 1.0, 1.0], "r2": 0.1},
                }
            }
        )
    )
    found = ex.read_directions(path)
    assert list(found) == ["sf", "depth"]
    names, units, r2 = ex.unit_directions(found, noise_dim=3, latent_dim=3)
    assert names == ["sf", "depth"] and r2 == [0.9, 0.3]
    np.testing.assert_allclose(units, [[0.6, 0.0, 0.8], [0.0, 1.0, 0.0]])
    # a latent-vector direction of an angle model: the two condition entries are dropped
    _, units, _ = ex.unit_directions({"a": np.array([5.0, 5.0, 0.0, 2.0])}, noise_dim=2, latent_dim=4)
    np.testing.assert_allclose(units, [[0.0, 1.0]])
    with pytest.raises(ValueError, match="'a' has 5 entries"):
        ex.unit_directions({"a": np.ones(5)}, noise_dim=2, latent_dim=4)
    with pytest.raises(ValueError, match="'z' is not a finite non-zero"):
        ex.unit_directions({"z": np.zeros(2)}, noise_dim=2, latent_dim=4)
    (tmp_path / "empty.json").write_text("{}")
    assert ex.read_directions(tmp_path / "empty.json") == {}
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match=re.escape("bad.json")):
        ex.read_directions(tmp_path / "bad.json")


@pytest.mark.parametrize(
    ("arch", "conditioning"),
    [("fixed25", "product"), ("fixed25", "product_and_value"), ("angle51", "product")],
)
def test_conditioned_latent_is_the_models_latent(arch: str, conditioning: str) -> None:
    from hepgan.models import ModelConfig, build

    g, _ = build(ModelConfig(arch=arch, size="tiny", conditioning=conditioning), nnx.Rngs(0))
    key = jax.random.key(3)
    e = jnp.asarray([10.0, 250.0], jnp.float32)
    th = jnp.asarray([1.2, 1.9], jnp.float32)
    noise = jax.random.normal(key, (2, ex.noise_dim_of(g)), jnp.float32)
    np.testing.assert_allclose(
        np.asarray(ex.conditioned_latent(g, np.asarray(e), np.asarray(th), np.asarray(noise))),
        np.asarray(g.latent(key, e, th)),
        rtol=1e-6,
    )


# --------------------------------------------------------------------------------------------------------
# a tiny trained run
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_run(tmp_path_factory, "healthy")


@pytest.fixture(scope="module")
def tiny_data(tiny_run: Path) -> ex.ExplorerData:
    return ex.precompute(tiny_run, reference=64)


def test_tiny_run_grid(tiny_data: ex.ExplorerData) -> None:
    d = tiny_data
    assert d.xy.shape == (8, 1, 2, 5, 25, 25) and d.yz.shape == (8, 1, 2, 5, 25, 25)
    assert d.longitudinal.shape == (8, 1, 2, 5, 25) and d.lateral.shape == (8, 1, 2, 5, 25)
    np.testing.assert_allclose(d.energies[[0, -1]], [10.0, 500.0])  # the run's data.energy uniform:10:500
    assert d.thetas_deg.tolist() == [90.0] and not d.angle_model
    assert d.direction_names == ["noise[0]", "noise[1]"] and d.steps.tolist() == [-2.0, -1.0, 0.0, 1.0, 2.0]
    assert d.info["arch"] == "fixed25" and d.info["step"] == 8 and d.info["latent_dim"] == 8
    assert np.all(np.isfinite(d.xy)) and np.all(d.xy >= 0) and np.all(d.e_vis > 0)
    # the middle step is the same shower for both directions; the steps move it
    np.testing.assert_array_equal(d.xy[:, :, 0, 2], d.xy[:, :, 1, 2])
    assert not np.allclose(d.xy[:, :, 0, 0], d.xy[:, :, 0, 4])
    # the numbers follow from the profiles
    np.testing.assert_allclose(d.e_vis, d.longitudinal.sum(-1), rtol=1e-12)
    np.testing.assert_allclose(d.e_vis, d.lateral.sum(-1), rtol=1e-9)
    np.testing.assert_allclose(d.sampling_fraction, d.e_vis / d.energies[:, None, None, None], rtol=1e-12)
    ref = d.reference
    assert ref is not None and ref.count.sum() == 64 and d.info["reference_events"] == 64
    assert np.all(ref.sampling_fraction[ref.count > 0] > 0)


def test_tiny_run_page(tiny_data: ex.ExplorerData, tmp_path: Path) -> None:
    path = ex.write_explorer(tiny_data, tmp_path / "explorer.html")
    page = path.read_text()
    size = path.stat().st_size
    assert size < 1_500_000, size  # 80 showers of 25^3 as float32, and the reference
    check_self_contained(page)
    ctx = js_context(page)
    assert js(ctx, "EXPLORER_META.encoding") == "float32"
    for idx in [(0, 0, 0, 0), (3, 0, 1, 4), (7, 0, 0, 2)]:
        st = js_state(ctx, f"stateFor({', '.join(map(str, idx))})")
        assert st is not None
        check_point(st, want_at(tiny_data, idx), 2e-6)
    ref = tiny_data.reference
    assert ref is not None
    e = int(np.argmax(ref.count[:, 0]))
    st = js_state(ctx, f"referenceFor({e}, 0)")
    assert st is not None and st["count"] == ref.count[e, 0]
    check_point(st, want_at(tiny_data, (e, 0), ref), 2e-6)
    specs = js(ctx, "sliderSpecs()")
    assert [s["key"] for s in specs] == ["energy", "dir0", "dir1"]
    assert specs[0]["values"] == tiny_data.energies.tolist()


def test_explore_reads_dissect_json(tiny_run: Path, tiny_data: ex.ExplorerData, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    doc = {
        "latent_directions": {
            "sf": {"vector": rng.standard_normal(8).tolist(), "r2": 0.4},
            "depth": {"vector": rng.standard_normal(8).tolist(), "r2": 0.6},
            "width": {"vector": rng.standard_normal(8).tolist(), "r2": 0.05},
        }
    }
    (tmp_path / "dissect.json").write_text(json.dumps(doc))
    e = [float(tiny_data.energies[2]), float(tiny_data.energies[6])]
    page = ex.explore(tiny_run, tmp_path, energies=e, steps=3, span=1.5)
    assert page == tmp_path / "explorer.html"
    ctx = js_context(page.read_text())
    meta = js(ctx, "EXPLORER_META")
    assert [d["name"] for d in meta["directions"]] == ["depth", "sf"]
    assert meta["steps"] == [-1.5, 0.0, 1.5] and meta["energies"] == e
    assert meta["info"]["directions_from"] == str(tmp_path / "dissect.json")
    # the base noise depends on the seed only: the middle shower is the one of the default grid
    st = js_state(ctx, "stateFor(1, 0, 0, 1)")
    assert st is not None
    np.testing.assert_allclose(np.reshape(st["xy"], (25, 25)), tiny_data.xy[6, 0, 0, 2], rtol=1e-4, atol=1e-9)
