"""``hepgan-explain``: every view from the command line on a healthy and a collapsed tiny run, the index
and the validation report's links, one-paragraph errors, and ``regenerate`` of one generated shower."""

from __future__ import annotations

import numpy as np
import pytest
from explain_helpers import collapsed_latent, shared_run

from hepgan.cli.explain import main


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return shared_run(tmp_path_factory, "healthy"), shared_run(tmp_path_factory, "collapsed")


def test_all_views_and_index(runs, capsys):
    healthy, _ = runs
    assert main(["all", str(healthy), "--seed", "1"]) == 0
    out = healthy / "explain"
    for page in ("dynamics.html", "dissect.html", "traverse.html", "explorer.html", "index.html"):
        assert (out / page).stat().st_size > 0, page
    index = (out / "index.html").read_text()
    for page in ("dynamics.html", "dissect.html", "traverse.html", "explorer.html"):
        assert f'href="{page}"' in index
    assert "../report/report.html" in index
    assert str(out / "index.html") in capsys.readouterr().out


def test_report_links_the_explain_pages(runs):
    healthy, _ = runs
    report = (healthy / "report" / "report.html").read_text()
    assert "<h2>Explain</h2>" in report
    assert 'href="../explain/dynamics.html"' in report  # written with the report, from the logs
    assert (healthy / "explain" / "dynamics.html").exists()


def test_dynamics_warns_on_the_collapsed_run(runs, capsys):
    healthy, collapsed = runs
    with collapsed_latent():
        assert main(["dynamics", str(collapsed), "--out", str(collapsed / "ex")]) == 0
    err = capsys.readouterr().err
    assert "WARNING [mode_collapse]" in err
    assert main(["dynamics", str(healthy), "--out", str(healthy / "ex")]) == 0
    assert "mode_collapse" not in capsys.readouterr().err


def test_not_a_run_is_a_one_paragraph_error(tmp_path, capsys):
    assert main(["traverse", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "manifest.json" in err and str(tmp_path) in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:
        main(["nosuchview", str(tmp_path)])
    assert exc.value.code == 2


def test_regenerate_one_shower(runs, tmp_path, capsys):
    from hepgan.cli.generate import main as generate
    from hepgan.data.formats import read_file

    healthy, _ = runs
    assert generate([str(healthy), "--n", "20", "--batch", "8", "--out", str(tmp_path / "gen")]) == 0
    path = sorted((tmp_path / "gen").glob("*.h5"))[0]
    npy = tmp_path / "shower.npy"
    assert main(["regenerate", str(path), "13", "--out", str(npy)]) == 0
    assert np.array_equal(np.load(npy), read_file(path).ecal[13])
    assert main(["regenerate", str(path), "99"]) == 1  # no such event: a message, not a traceback
    assert "99" in capsys.readouterr().err
