"""The multi-task paper's dataset loaders on data written in the real layouts."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from facelab.context import BuildContext
from facelab.errors import FacelabError
from facelab.manager import get_registry
from facelab.plugins.datasets import imdb_wiki
from facelab.plugins.datasets.imdb_wiki import AGE_CLASSES

from fixtures_multitask import datenum, write_genki4k, write_imdb_wiki, write_mat

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def build(kind: str, tmp_path: Path, **values):
    component = get_registry().get("dataset", kind)
    return component.factory(component.validate(values, "data.datasets.x"),
                             BuildContext(cache_dir=tmp_path / "cache"))


# ---------------------------------------------------------------------------------- GENKI-4K

def test_genki4k_reads_labels_pose_and_paths(tmp_path):
    root = write_genki4k(tmp_path / "GENKI-4K", count=30)
    lines = (root / "labels.txt").read_text().split()
    expected = np.array(lines, float).reshape(-1, 4)
    table = build("genki4k", tmp_path, root=str(root))
    assert len(table) == 30 and not table.skipped
    assert list(table.tasks) == ["smile"] and table.tasks["smile"].classes == ("non-smile", "smile")
    assert (table.frame["smile"].to_numpy() == expected[:, 0]).all()
    np.testing.assert_allclose(table.frame[["yaw", "pitch", "roll"]].to_numpy(), expected[:, 1:])
    assert table.frame["path"].iloc[0] == str(root / "files" / "file0001.jpg")
    assert table.frame["path"].iloc[29] == str(root / "files" / "file0030.jpg")


def test_genki4k_counts_missing_images_and_accepts_mplab_labels_name(tmp_path):
    root = write_genki4k(tmp_path / "g", count=10)
    (root / "files" / "file0003.jpg").unlink()
    (root / "labels.txt").rename(root / "GENKI-4K_Labels.txt")
    table = build("genki4k", tmp_path, root=str(root))
    assert len(table) == 9 and table.skipped == {"image file missing": 1}
    assert not table.frame["path"].str.endswith("file0003.jpg").any()


def test_genki4k_errors_name_the_problem(tmp_path):
    with pytest.raises(FacelabError, match="is not a folder"):
        build("genki4k", tmp_path, root=str(tmp_path / "nowhere"))
    root = write_genki4k(tmp_path / "g", count=5)
    (root / "labels.txt").unlink()
    with pytest.raises(FacelabError, match=r"labels\.txt not found"):
        build("genki4k", tmp_path, root=str(root))
    (root / "labels.txt").write_text("1 0.1 0.2 0.3\n1 0.1 0.2\n")
    with pytest.raises(FacelabError, match=r"labels\.txt line 2: expected 'smile yaw pitch roll'"):
        build("genki4k", tmp_path, root=str(root))
    (root / "labels.txt").write_text("1 0.1 0.2 0.3\n2 0.1 0.2 0.3\n")
    with pytest.raises(FacelabError, match="line 2"):
        build("genki4k", tmp_path, root=str(root))
    (root / "labels.txt").write_text("1 0.1 0.2 0.3\n")
    (root / "files").rename(root / "images")
    with pytest.raises(FacelabError, match="files not found"):
        build("genki4k", tmp_path, root=str(root))


# --------------------------------------------------------------------------------- IMDB-WIKI

@pytest.mark.parametrize("subset", ["imdb", "wiki"])
def test_imdb_wiki_filters_and_labels(tmp_path, subset):
    fixture = write_imdb_wiki(tmp_path, subset, count=36, invalid=3)
    table = build("imdb-wiki", tmp_path, subset=subset, root=str(fixture.folder))
    assert table.skipped == fixture.skipped
    assert sum(table.skipped.values()) == 15  # 5 reasons x 3 rows, each counted once
    expected = {str(fixture.folder / r["full_path"]): r for r in fixture.valid}
    assert set(table.frame["path"]) == set(expected)
    for row in table.frame.itertuples():
        want = expected[row.path]
        assert (row.gender, row.age_years, row.age) == (want["gender"], want["age"], want["group"])
    assert table.tasks["gender"].classes == ("male", "female")
    assert table.tasks["age"].classes == AGE_CLASSES == (
        "0-15", "16-25", "26-35", "36-45", "46-60", "61-100")
    assert set(table.frame["age"]) == set(range(6))


def test_imdb_wiki_age_convention_by_hand(tmp_path):
    """Age = photo year - birth year, minus one when born in July-December."""
    folder = tmp_path / "imdb_crop"
    folder.mkdir()
    cases = [  # (birth date, photo year, expected age, expected group)
        (datetime.date(1970, 6, 30), 2000, 30, 2),
        (datetime.date(1970, 7, 1), 2000, 29, 2),
        (datetime.date(1899, 5, 10), 1968, 69, 5),   # IMDB's first entry (Fred Astaire)
        (datetime.date(1985, 12, 31), 2001, 15, 0),
        (datetime.date(1985, 1, 1), 2001, 16, 1),
        (datetime.date(1950, 2, 2), 2010, 60, 4),
        (datetime.date(1949, 2, 2), 2010, 61, 5),
        (datetime.date(1910, 3, 3), 2010, 100, 5),
        (datetime.date(1909, 3, 3), 2010, None, None),  # 101: out of range
    ]
    rows = [{"dob": datenum(d, 0.5), "photo_taken": y, "full_path": f"00/p{i}.jpg", "gender": 1.0,
             "face_score": 3.0, "second_face_score": np.nan, "name": "x"}
            for i, (d, y, _, _) in enumerate(cases)]
    write_mat(folder / "imdb.mat", "imdb", rows)
    assert datenum(datetime.date(1970, 1, 1)) == imdb_wiki.DATENUM_EPOCH
    table = build("imdb-wiki", tmp_path, root=str(tmp_path), check_files=False)
    assert table.frame["age_years"].tolist() == [c[2] for c in cases if c[2] is not None]
    assert table.frame["age"].tolist() == [c[3] for c in cases if c[3] is not None]
    assert table.skipped == {"age outside 0-100": 1}
    assert (table.frame["gender"] == 0).all()  # .mat 1 = male = class 0


def test_imdb_wiki_root_forms_limit_and_min_score(tmp_path):
    fixture = write_imdb_wiki(tmp_path, "imdb", count=40, invalid=1)
    by_parent = build("imdb-wiki", tmp_path, root=str(tmp_path))
    by_mat = build("imdb-wiki", tmp_path, root=str(fixture.mat))
    assert by_parent.frame["path"].tolist() == by_mat.frame["path"].tolist()
    assert len(by_parent) == 40

    a = build("imdb-wiki", tmp_path, root=str(tmp_path), limit=15, seed=3)
    b = build("imdb-wiki", tmp_path, root=str(tmp_path), limit=15, seed=3)
    c = build("imdb-wiki", tmp_path, root=str(tmp_path), limit=15, seed=4)
    assert len(a) == 15 and a.frame["path"].tolist() == b.frame["path"].tolist()
    assert a.frame["path"].tolist() != c.frame["path"].tolist()
    assert a.skipped["left out by limit (random sample)"] == 25

    scores = by_parent.frame["face_score"].to_numpy()
    strict = build("imdb-wiki", tmp_path, root=str(tmp_path), min_face_score=3.0)
    assert len(strict) == int((scores >= 3.0).sum())
    assert strict.skipped["face_score below min_face_score"] == int((scores < 3.0).sum())

    Path(by_parent.frame["path"].iloc[0]).unlink()
    missing = build("imdb-wiki", tmp_path, root=str(tmp_path))
    assert len(missing) == 39 and missing.skipped["image file missing"] == 1
    unchecked = build("imdb-wiki", tmp_path, root=str(tmp_path), check_files=False)
    assert len(unchecked) == 40


def test_imdb_wiki_errors_name_the_problem(tmp_path):
    with pytest.raises(FacelabError, match=r"imdb\.mat not found"):
        build("imdb-wiki", tmp_path, root=str(tmp_path))
    text = tmp_path / "imdb.csv"
    text.write_text("a,b\n")
    with pytest.raises(FacelabError, match="expected the imdb_crop folder or its imdb.mat"):
        build("imdb-wiki", tmp_path, root=str(text))
    broken = tmp_path / "broken" / "imdb.mat"
    broken.parent.mkdir()
    broken.write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(FacelabError, match="not a readable MATLAB .mat file"):
        build("imdb-wiki", tmp_path, root=str(broken))
    other = tmp_path / "other" / "imdb.mat"
    other.parent.mkdir()
    scipy.io.savemat(other, {"wiki": {"dob": np.zeros((1, 2))}})
    with pytest.raises(FacelabError, match="holds no variable 'imdb'"):
        build("imdb-wiki", tmp_path, root=str(other))
    scipy.io.savemat(other, {"imdb": {"dob": np.zeros((1, 2)), "full_path": np.zeros((1, 2))}})
    with pytest.raises(FacelabError, match=r"lacks fields \['photo_taken', 'gender'"):
        build("imdb-wiki", tmp_path, root=str(other))
    with pytest.raises(FacelabError, match="subset"):
        get_registry().get("dataset", "imdb-wiki").validate({"root": "x", "subset": "imbd"},
                                                             "data.datasets.imdb_wiki")


def test_datasets_declare_their_tasks_without_loading():
    registry = get_registry()
    genki = registry.get("dataset", "genki4k")
    imdb = registry.get("dataset", "imdb-wiki")
    assert list(genki.tasks(genki.validate({"root": "/nowhere"}, "x"))) == ["smile"]
    assert list(imdb.tasks(imdb.validate({"root": "/nowhere"}, "x"))) == ["gender", "age"]
