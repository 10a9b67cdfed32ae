"""The generated tables of README.md and docs/ follow the committed files under benchmarks/results/.

``benchmarks/readme_tables.py`` rebuilds each ``<!-- generated: SOURCE -->`` block from its source
(a bench folder's results.csv, a pytest-benchmark JSON, a measurement JSON); a table edited by hand,
or a results file changed without regenerating the documents, fails here.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import readme_tables  # noqa: E402


def test_every_generated_block_matches_its_committed_source():
    blocks = [(doc, m.group("spec")) for doc in readme_tables.documents() for m in readme_tables.BLOCK.finditer(doc.read_text())]
    assert len(blocks) >= 9, "the README and docs should hold their tables as generated blocks"
    for _, spec in blocks:
        for arg in spec.split()[1:]:  # the path-like arguments (FOLDER, FILE, LABEL=FOLDER) must exist
            source = arg.split("=")[-1]
            if "/" in source:
                assert (ROOT / source).exists(), f"{spec}: {source} is not in the repository"
    stale = readme_tables.stale_blocks()
    assert not stale, "tables differ from their files (run `python benchmarks/readme_tables.py --write`): " + "; ".join(stale)


def test_a_hand_edited_number_is_caught(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    block = next(b for b in readme_tables.BLOCK.finditer(readme) if "0.9" in b.group("body"))
    edited = readme[: block.start("body")] + block.group("body").replace("0.9", "0.8", 1) + readme[block.end("body"):]
    assert edited != readme
    (tmp_path / "README.md").write_text(edited)
    monkeypatch.setattr(readme_tables, "documents", lambda: [tmp_path / "README.md"])
    assert readme_tables.stale_blocks() == [f"{tmp_path / 'README.md'}: {block.group('spec')}"]


def test_a_changed_results_row_is_caught(tmp_path, monkeypatch):
    """A results.csv that changes (a rerun, an edit) without regenerating the document fails."""
    import shutil

    folder = tmp_path / "benchmarks" / "results" / "bc"
    shutil.copytree(ROOT / "benchmarks" / "results" / "breast-cancer", folder)
    doc = tmp_path / "doc.md"
    monkeypatch.setattr(readme_tables, "ROOT", tmp_path)
    spec = "summary benchmarks/results/bc"
    doc.write_text(f"<!-- generated: {spec} -->\n{readme_tables.render(spec)}<!-- end generated -->\n")
    monkeypatch.setattr(readme_tables, "documents", lambda: [doc])
    assert readme_tables.stale_blocks() == []
    rows = (folder / "results.csv").read_text().splitlines()
    rows[1] = rows[1].replace(",ok,0.", ",ok,0.1", 1)  # one AUROC changed
    (folder / "results.csv").write_text("\n".join(rows) + "\n")
    assert any(spec in p for p in readme_tables.stale_blocks())
    with pytest.raises(SystemExit):
        monkeypatch.setattr(sys, "argv", ["readme_tables.py"])
        readme_tables.main()


def test_compare_pairs_the_cells_both_settings_hold(tmp_path, monkeypatch):
    """Per method: each setting's mean AUROC over the cells both hold, and the mean paired
    difference ± its population SD, by hand; a cell only one setting holds is left out."""
    head = "method,kind,normal_class,seed,status,auroc\n"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "results.csv").write_text(head + "m,method,0,0,ok,0.90\nm,method,1,0,ok,0.80\nm,method,2,0,ok,0.5\n")
    (tmp_path / "b" / "results.csv").write_text(head + "m,method,0,0,ok,0.86\nm,method,1,0,ok,0.82\nm,method,2,0,failed,\n")
    monkeypatch.setattr(readme_tables, "ROOT", tmp_path)
    table = readme_tables.render("compare first_one=a second=b").splitlines()
    assert table[0] == "| method | cells | AUROC, first one | AUROC, second | second − first one |"
    # cells 0 and 1: means 0.85 and 0.84, differences -0.04 and +0.02: mean -0.01, population SD 0.03
    assert table[2] == "| m | 2 | 0.850 | 0.840 | -0.010 ± 0.030 |"


def test_map_types_average_each_defect_type_over_the_seeds(tmp_path, monkeypatch):
    import json as _json

    def types(foreign, scratch):
        return _json.dumps({"foreign": {"pixel_auroc": foreign}, "scratch": {"pixel_auroc": scratch}}).replace('"', '""')

    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "results.csv").write_text(
        "method,kind,normal_class,seed,status,auroc,per_defect_type\n"
        f'patch-knn,method,0,0,ok,0.9,"{types(0.9, 0.5)}"\nm,method,0,0,ok,0.9,"{types(0.8, 0.7)}"\n'
        f'm,method,0,1,ok,0.9,"{types(0.6, 0.8)}"\n')
    monkeypatch.setattr(readme_tables, "ROOT", tmp_path)
    table = readme_tables.render("map-types pixel_auroc set").splitlines()
    assert table[0] == "| set | defect type | m | patch-knn |"  # the map baseline last
    assert table[2:] == ["| set (2 seeds) | foreign | 0.700 | **0.900** |", "| set (2 seeds) | scratch | **0.750** | 0.500 |"]


# -- numbers in sentences (benchmarks/prose_numbers.py) -----------------------------------------------
import prose_numbers  # noqa: E402


def test_every_marked_prose_number_matches_its_file_and_no_unmarked_one_is_new():
    assert len([m for doc in prose_numbers.documents() for m in prose_numbers.MARK.finditer(doc.read_text())]) >= 20
    assert prose_numbers.problems() == []


def test_a_hand_edited_prose_number_is_caught():
    text = "took 62<!--m: json benchmarks/results/lazy-memory/fit-workers-64x64x3.json rows.0.4 --> s"
    assert prose_numbers.check_markers(text) == []
    assert prose_numbers.check_markers(text.replace("62<", "61.5<")) == [
        "61.5 but the file gives 62.000 (<!--m: json benchmarks/results/lazy-memory/fit-workers-64x64x3.json rows.0.4 -->)"]
    # a range's dash is no minus sign; rounding follows the decimals shown
    csv_spec = "csv benchmarks/results/fmnist-oc-full/results.csv auroc mean method=ama seed=1 status=ok"
    assert prose_numbers.check_markers(f"0.935<!--m: {csv_spec} -->-0.93511<!--m: {csv_spec} -->") == []
    assert prose_numbers.check_markers(f"0.936<!--m: {csv_spec} -->") != []
    assert prose_numbers.resolve(f"{csv_spec} x100") == pytest.approx(93.511, abs=5e-4)


def test_a_new_unmarked_measurement_fails_the_ratchet(tmp_path, monkeypatch):
    doc = tmp_path / "README.md"
    doc.write_text("It trains in 12.5 s<!--m: json x.json a --> on 10,000 images.\n")
    assert prose_numbers.unmarked(doc.read_text()) == ["10,000"]
    monkeypatch.setattr(prose_numbers, "ROOT", tmp_path)
    monkeypatch.setattr(prose_numbers, "documents", lambda: [doc])
    monkeypatch.setattr(prose_numbers, "RATCHET", tmp_path / "ratchet.json")
    (tmp_path / "ratchet.json").write_text('{"README.md": 1}')
    (tmp_path / "x.json").write_text('{"a": 12.5}')
    assert prose_numbers.problems() == []
    doc.write_text(doc.read_text() + "Scoring took 3.25 s.\n")
    assert prose_numbers.problems() == ["README.md: 2 measurement-like numbers without a marker, 1 allowed "
                                        "(mark the new ones: `python benchmarks/prose_numbers.py --list README.md`)"]
