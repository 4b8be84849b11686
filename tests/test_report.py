"""deepnet report: one self-contained page; opened in headless Chromium when one is installed."""

import json
import re
import shutil
from pathlib import Path

import pytest

from deepnet.cli import main
from deepnet.report import SECTIONS, build_report
from tests._browser import find_browser, visit
from tests._tiny_runs import make_digits_cnn_run

ROBUSTNESS = {"clean_accuracy": 0.981, "attacks": [
    {"method": "fgsm", "norm": "linf", "eps": 0.1, "steps": 1, "restarts": 1, "targeted": False,
     "accuracy": 0.62, "success_rate": 0.37, "mean_perturbation": 0.1},
    {"method": "pgd", "norm": "linf", "eps": 0.3, "steps": 40, "restarts": 2, "targeted": False,
     "accuracy": 0.013, "success_rate": 0.987, "mean_perturbation": 0.29}],
    "masking": [{"check": "single_step_stronger", "message": "FGSM (2.0%) beats 40-step PGD (5.0%) at linf eps=0.3"}]}
COMPRESSION = {"stages": [
    {"name": "original", "test_accuracy": 0.981, "nonzero_parameters": 61706, "file_bytes": 247000,
     "latency_ms_batch1": 0.21, "throughput_batch256": 91000},
    {"name": "pruned+int8", "test_accuracy": 0.978, "nonzero_parameters": 4937, "file_bytes": 31000,
     "latency_ms_batch1": 0.18, "throughput_batch256": 120000}]}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    """A run on which every step has written its files (attack and compress: hand-written)."""
    run = make_digits_cnn_run(tmp_path_factory.mktemp("report"))
    for argv in (["evaluate", str(run), "--device", "cpu"], ["diagnose", str(run)], ["calibrate", str(run)],
                 ["explain", str(run), "--method", "saliency", "--samples", "8"]):
        assert main(argv) == 0
    (run / "robustness.json").write_text(json.dumps(ROBUSTNESS))
    (run / "compression.json").write_text(json.dumps(COMPRESSION))
    assert main(["report", str(run)]) == 0
    return run


def test_the_page_holds_every_section_and_embeds_everything(full_run: Path):
    page = (full_run / "report.html").read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in page
    assert "pruned+int8" in page and "98.70%" in page  # the PGD row's success rate, formatted
    assert "FGSM (2.0%) beats 40-step PGD" in page
    images = re.findall(r'<img src="([^"]{0,30})', page)
    assert len(images) >= 5 and all(src.startswith("data:image/png;base64,") for src in images)
    # self-contained: nothing to fetch, no script
    assert not re.search(r'(src|href)="(?!data:|#)', page) and "<script" not in page and "@import" not in page
    assert "@media print" in page


def test_missing_steps_say_which_command_fills_them(tmp_path: Path, full_run: Path):
    bare = shutil.copytree(full_run, tmp_path / "bare")
    for name in ("calibration.json", "robustness.json", "compression.json", "diagnosis.json", "evaluation.json"):
        (bare / name).unlink()
    shutil.rmtree(bare / "explanations")
    page = (build_report(bare)).read_text()
    assert f"deepnet calibrate {bare}" in page and f"deepnet explain {bare}" in page
    assert f"deepnet diagnose {bare}" in page and f"deepnet attack {bare}" in page


@pytest.mark.parametrize("case", ["missing", "not-a-run", "bad-json"])
def test_report_bad_input_is_one_line_and_exit_2(case: str, tmp_path: Path, full_run: Path, capsys):
    target = tmp_path / "nowhere"
    if case == "not-a-run":
        target.mkdir()
    elif case == "bad-json":
        target = shutil.copytree(full_run, tmp_path / "run")
        (target / "robustness.json").write_text("{oops")
    assert main(["report", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert {"missing": "not found", "not-a-run": "not a run directory", "bad-json": "not valid JSON"}[case] in err


BROWSER = find_browser()


@pytest.mark.skipif(BROWSER is None, reason="no Chromium/Chrome on this machine (apt-get install chromium, or set "
                                            "DEEPNET_CHROMIUM): the report was NOT opened in a browser")
def test_report_opens_in_headless_chromium(full_run: Path, tmp_path: Path):
    """Acceptance 5: no console errors, every section there, a screenshot, no network request."""
    probe = ("JSON.stringify({sections: [...document.querySelectorAll('section')].map(s => s.id), "
             "images: [...document.images].filter(i => i.complete && i.naturalWidth > 0).length, "
             "all_images: document.images.length, width: document.documentElement.scrollWidth, "
             "nav: getComputedStyle(document.querySelector('nav')).display})")
    result = visit(BROWSER, full_run / "report.html", probe)
    assert result.errors == []
    assert result.requests == []
    seen = json.loads(result.probe)
    assert seen["sections"] == list(SECTIONS)
    assert seen["images"] == seen["all_images"] >= 5  # every embedded image decoded
    assert seen["width"] <= 1366  # no horizontal scrolling on a laptop screen
    assert result.screenshot[:8] == b"\x89PNG\r\n\x1a\n" and len(result.screenshot) > 50_000
    (tmp_path / "report.png").write_bytes(result.screenshot)
    printed = json.loads(result.print_probe)  # prints cleanly: no navigation bar, nothing wider than the paper
    assert seen["nav"] != "none" and printed["nav"] == "none" and printed["sections"] == list(SECTIONS)
    assert result.pdf.startswith(b"%PDF") and len(result.pdf) > 50_000
    (tmp_path / "report.pdf").write_bytes(result.pdf)
