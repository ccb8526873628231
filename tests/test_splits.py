"""Class-split manifests: schemes, determinism, validation, Parquet, the clip-level view, the CLI."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from siamese_audio.cli import splits as cli
from siamese_audio.errors import SplitError
from siamese_audio.manifests import splits
from siamese_audio.manifests.classes import AUDIOMNIST_SPEAKERS, ESC50_CATEGORIES, known_classes
from siamese_audio.manifests.split_catalog import clip_rows, validate_against_version
from siamese_audio.manifests.split_lists import split_from_file
from siamese_audio.manifests.splits import (
    Split,
    make_metaaudio_split,
    make_random_split,
    make_report_split,
    read_split,
    validate,
    write_split,
)

SHARED_ESC50_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "esc50" / "meta" / "esc50.csv"


class FakeVersion:
    """The part of a FeatureVersion the split functions use: dataset, catalog, stored()."""

    def __init__(self, dataset: str, counts: dict[str, int], rejected: dict[str, int] | None = None,
                 path: str = "/store/fake/v1") -> None:
        self.dataset = dataset
        self.path = path
        self.version_id = "fake1"
        records = []
        for cls, n in counts.items():
            records += [{"class": cls, "status": "stored"} for _ in range(n)]
        for cls, n in (rejected or {}).items():
            records += [{"class": cls, "status": "rejected"} for _ in range(n)]
        order = np.random.default_rng(0).permutation(len(records))  # rows interleaved across classes
        cat = pd.DataFrame([records[i] for i in order])
        stored_row = np.cumsum(cat["status"] == "stored") - 1
        cat["row"] = np.where(cat["status"] == "stored", stored_row, -1).astype(np.int64)
        cat["clip_id"] = [f"{c}_{i:03d}" for i, c in enumerate(cat["class"])]
        self.catalog = cat[["row", "clip_id", "class", "status"]]

    def stored(self) -> pd.DataFrame:
        return self.catalog[self.catalog["status"] == "stored"].reset_index(drop=True)

    def classes(self) -> list[str]:
        return sorted(self.stored()["class"].unique().tolist())


def tiny_split(dataset: str = "audiomnist") -> Split:
    return Split(dataset, "file", None, {"train": ["01", "02"], "validation": [], "test": ["03", "04"]})


# --------------------------------------------------------------------------- known classes


def test_known_classes_match_the_datasets():
    assert AUDIOMNIST_SPEAKERS[0] == "01" and AUDIOMNIST_SPEAKERS[-1] == "60" and len(AUDIOMNIST_SPEAKERS) == 60
    assert len(set(ESC50_CATEGORIES)) == 50
    with pytest.raises(SplitError, match=r"Expected a dataset among \['audiomnist', 'esc50'\]. Got 'urbansound'"):
        known_classes("urbansound")


def test_esc50_categories_spelled_as_in_esc50_csv():
    if not SHARED_ESC50_CSV.is_file():
        pytest.skip("../shared/data is absent (a user's clone does not have it)")
    with open(SHARED_ESC50_CSV, newline="") as f:
        by_target = {int(r["target"]): r["category"] for r in csv.DictReader(f)}
    assert tuple(by_target[i] for i in range(50)) == ESC50_CATEGORIES


# --------------------------------------------------------------------------- schemes


@pytest.mark.parametrize("dataset, sizes, test", [
    ("audiomnist", (50, 5, 5), ["04", "27", "46", "55", "56"]),
    ("esc50", (40, 5, 5), ["church_bells", "door_wood_creaks", "frog", "glass_breaking", "laughing"]),
])
def test_report_split_has_the_reports_test_classes(dataset, sizes, test):
    s = make_report_split(dataset)
    assert s.sizes == sizes
    assert s.classes["test"] == test
    assert s.scheme == "report" and s.seed == splits.REPORT_VALIDATION_SEED == 0
    validate(s)


def test_report_validation_classes_are_the_documented_seeded_draw():
    am, esc = make_report_split("audiomnist"), make_report_split("esc50")
    assert am.classes["validation"] == ["11", "20", "24", "44", "57"]
    assert esc.classes["validation"] == ["car_horn", "clapping", "cow", "crow", "helicopter"]
    rest = [c for c in AUDIOMNIST_SPEAKERS if c not in am.classes["test"]]
    assert sorted(splits.seeded_order(rest, 0)[:5]) == am.classes["validation"]
    assert "11" in (make_report_split.__doc__ or "") and "helicopter" in (make_report_split.__doc__ or "")


def test_metaaudio_split_lists():
    s = make_metaaudio_split()
    assert s.sizes == (35, 5, 10)
    assert s.classes["validation"] == sorted(["crackling_fire", "clock_alarm", "coughing", "hen", "breathing"])
    assert s.classes["test"] == sorted([
        "vacuum_cleaner", "sneezing", "thunderstorm", "crow", "glass_breaking",
        "church_bells", "cow", "dog", "airplane", "engine",
    ])
    assert "rain" in s.classes["train"] and "dog" not in s.classes["train"]
    validate(s)
    with pytest.raises(SplitError, match=r"Expected dataset 'esc50' for the metaaudio scheme.*Got 'audiomnist'"):
        make_metaaudio_split("audiomnist")


def test_random_split_same_seed_same_bytes_and_id(tmp_path):
    a = make_random_split("audiomnist", seed=7)
    b = make_random_split("audiomnist", seed=7)
    assert a == b and a.split_id == b.split_id
    pa_, pb = write_split(a, tmp_path / "a.parquet"), write_split(b, tmp_path / "b.parquet")
    assert pa_.read_bytes() == pb.read_bytes()
    assert write_split(make_report_split("esc50"), tmp_path / "r1.parquet").read_bytes() == \
        write_split(make_report_split("esc50"), tmp_path / "r2.parquet").read_bytes()


def test_random_split_different_seeds_differ():
    assignments = {make_random_split("esc50", seed=s).split_id for s in range(5)}
    assert len(assignments) == 5
    a, b = make_random_split("esc50", seed=0), make_random_split("esc50", seed=1)
    assert a.classes["test"] != b.classes["test"]
    assert a.sizes == b.sizes == (40, 5, 5)


def test_random_split_custom_sizes_and_classes():
    s = make_random_split("audiomnist", seed=3, sizes="6/2/2", classes=[f"{i:02d}" for i in range(1, 11)])
    assert s.sizes == (6, 2, 2)
    assert s.all_classes() == [f"{i:02d}" for i in range(1, 11)]
    with pytest.raises(SplitError, match=r"add up to the 60 classes of audiomnist. Got 40/5/5 = 50"):
        make_random_split("audiomnist", seed=0, sizes="40/5/5")
    with pytest.raises(SplitError, match=r"Expected sizes as TRAIN/VALIDATION/TEST.*Got '40-5-5'"):
        make_random_split("esc50", seed=0, sizes="40-5-5")
    with pytest.raises(SplitError, match=r"at least 2 train and 2 test classes.*Got 58/1/1"):
        make_random_split("audiomnist", seed=0, sizes="58/1/1")
    with pytest.raises(SplitError, match=r"Expected class ids to be non-empty strings.*Got \[4\]"):
        make_random_split("audiomnist", seed=0, sizes="1/0/1", classes=[4, "01"])


def test_split_id_depends_only_on_the_assignment():
    a = Split("audiomnist", "file", None, {"train": ["02", "01"], "validation": [], "test": ["03", "04"]})
    b = Split("audiomnist", "random", 5, {"train": ["01", "02"], "validation": [], "test": ["04", "03"]})
    c = Split("audiomnist", "file", None, {"train": ["01", "03"], "validation": [], "test": ["02", "04"]})
    assert a.split_id == b.split_id != c.split_id
    assert a.classes["train"] == ["01", "02"]


# --------------------------------------------------------------------------- validation errors


def test_overlapping_splits_are_refused():
    with pytest.raises(SplitError, match=r"Expected disjoint splits.*'04' \(train and test\)"):
        Split("audiomnist", "file", None, {"train": ["01", "04"], "validation": [], "test": ["04", "05"]})


def test_duplicate_class_in_one_split_is_refused():
    with pytest.raises(SplitError, match=r"Split 'train' lists these classes more than once: \['01'\]"):
        Split("audiomnist", "file", None, {"train": ["01", "01"], "validation": [], "test": ["04"]})


def test_wrong_split_names_and_types_are_refused():
    with pytest.raises(SplitError, match=r"Expected the splits \['train', 'validation', 'test'\]. Got \['test', 'train'\]"):
        Split("audiomnist", "file", None, {"train": ["01"], "test": ["02"]})
    with pytest.raises(SplitError, match=r"Expected class ids to be non-empty strings.*holds \[4\]"):
        Split("audiomnist", "file", None, {"train": ["01"], "validation": [], "test": [4]})
    with pytest.raises(SplitError, match=r"Expected a split scheme among"):
        Split("audiomnist", "magic", None, {"train": [], "validation": [], "test": []})


def test_unknown_class_names_the_closest_known_ones():
    s = Split("esc50", "file", None, {
        "train": [c for c in ESC50_CATEGORIES if c not in ("glass_breaking", "dog")] + ["glass_braking"],
        "validation": [], "test": ["dog"],
    })
    with pytest.raises(SplitError, match=r"Unknown classes for esc50: 'glass_braking' \(closest: glass_breaking"):
        validate(s)
    am = Split("audiomnist", "file", None, {"train": ["4", "01"], "validation": [], "test": ["02", "03"]})
    with pytest.raises(SplitError, match=r"'4' \(closest: .*04"):
        validate(am, classes=["01", "02", "03", "04"])


def test_missing_classes_are_named():
    s = make_report_split("audiomnist")
    partial = Split("audiomnist", "file", None, {**s.classes, "train": s.classes["train"][2:]})
    with pytest.raises(SplitError, match=r"cover all 60 classes of audiomnist. 2 are in no split: \['01', '02'\]"):
        validate(partial)


def test_sizes_must_add_up_and_match():
    s = make_report_split("esc50")
    with pytest.raises(SplitError, match=r"add up to the 50 classes of esc50. Got 35/5/5 = 45"):
        validate(s, sizes="35/5/5")
    with pytest.raises(SplitError, match=r"Expected sizes 35/5/10. Got 40/5/5"):
        validate(s, sizes="35/5/10")
    validate(s, sizes=(40, 5, 5))


# --------------------------------------------------------------------------- explicit files


def test_csv_keeps_class_ids_as_strings(tmp_path):
    path = tmp_path / "split.csv"
    rows = ["class,split"] + [f"{c},train" for c in AUDIOMNIST_SPEAKERS if c not in ("04", "27", "46")]
    rows += ["04,test", "27,test", "46,validation"]
    path.write_text("\n".join(rows) + "\n")
    # 57 train / 1 validation / 2 test: structurally readable, refused by validate for the single validation class
    s = split_from_file(path, dataset="audiomnist")
    assert s.classes["test"] == ["04", "27"] and "09" in s.classes["train"]
    assert s.scheme == "file" and s.seed is None
    with pytest.raises(SplitError, match=r"0 or at least 2 validation classes.*Got 57/1/2"):
        validate(s)


def test_csv_errors_name_the_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("class,split\n01,train\n02,tset\n")
    with pytest.raises(SplitError, match=r"bad.csv: line 3: expected a split among.*Got 'tset'. Did you mean 'test'\?"):
        split_from_file(path, dataset="audiomnist")
    path.write_text("speaker,part\n01,train\n")
    with pytest.raises(SplitError, match=r"expected a CSV header with 'class' and 'split' columns. Got \['speaker', 'part'\]"):
        split_from_file(path, dataset="audiomnist")
    path.write_text("class,split\n01,train\n01,test\n")
    with pytest.raises(SplitError, match=r"bad.csv: Expected disjoint splits.*'01' \(train and test\)"):
        split_from_file(path, dataset="audiomnist")
    other = tmp_path / "split.txt"
    other.write_text("")
    with pytest.raises(SplitError, match=r"expected a .csv or .json file.*Got suffix '.txt'"):
        split_from_file(other, dataset="audiomnist")


def test_json_layouts(tmp_path):
    s = make_report_split("esc50")
    for i, payload in enumerate([
        s.classes,
        s.to_json(),
        [{"class": c, "split": name} for name, cs in s.classes.items() for c in cs],
    ]):
        path = tmp_path / f"s{i}.json"
        path.write_text(json.dumps(payload))
        got = split_from_file(path, dataset="esc50")
        assert got.split_id == s.split_id
    path = tmp_path / "num.json"
    path.write_text(json.dumps({"train": ["01", "02"], "validation": [], "test": [4, "03"]}))
    with pytest.raises(SplitError, match=r"num.json: split 'test': expected the class id as a non-empty string.*Got 4"):
        split_from_file(path, dataset="audiomnist")
    path.write_text(json.dumps({"dataset": "esc50", "classes": s.classes}))
    with pytest.raises(SplitError, match=r"expected dataset 'audiomnist'. Got 'esc50'"):
        split_from_file(path, dataset="audiomnist")


# --------------------------------------------------------------------------- Parquet


def test_parquet_round_trip_and_layout(tmp_path):
    import pyarrow.parquet as pq

    s = make_random_split("audiomnist", seed=11)
    path = write_split(s, tmp_path / "s.parquet")
    assert read_split(path) == s
    table = pq.read_table(path)
    assert table.column_names == ["dataset", "class", "split"]
    assert table.num_rows == 60
    meta = table.schema.metadata
    assert meta[b"scheme"] == b"random" and meta[b"seed"] == b"11" and meta[b"split_id"] == s.split_id.encode()
    df = table.to_pandas()
    assert df["split"].tolist() == ["train"] * 50 + ["validation"] * 5 + ["test"] * 5
    assert df[df["split"] == "test"]["class"].tolist() == s.classes["test"]
    assert read_split(write_split(make_metaaudio_split(), tmp_path / "m.parquet")).seed is None


def test_read_split_refuses_edited_or_foreign_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = write_split(tiny_split(), tmp_path / "s.parquet")
    table = pq.read_table(path)
    edited = table.set_column(1, "class", pa.array(["01", "02", "03", "05"]))
    pq.write_table(edited, tmp_path / "edited.parquet")
    with pytest.raises(SplitError, match=r"edited.parquet: the recorded split id .* does not match its rows"):
        read_split(tmp_path / "edited.parquet")
    pq.write_table(pa.table({"x": [1]}), tmp_path / "other.parquet")
    with pytest.raises(SplitError, match=r"other.parquet: expected a split manifest .*Found format None"):
        read_split(tmp_path / "other.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(SplitError, match=r"junk.parquet: expected a split manifest \(Parquet\). Cannot read it"):
        read_split(tmp_path / "junk.parquet")
    with pytest.raises(SplitError, match=r"missing.parquet: expected a split manifest \(Parquet\). It does not exist"):
        read_split(tmp_path / "missing.parquet")


def test_write_split_into_missing_directory_writes_nothing(tmp_path):
    with pytest.raises(SplitError, match=r"expected an existing directory"):
        write_split(tiny_split(), tmp_path / "nope" / "s.parquet")
    assert not (tmp_path / "nope").exists()


# --------------------------------------------------------------------------- clip-level view


def test_clip_rows_join_with_catalog():
    v = FakeVersion("audiomnist", {"01": 3, "02": 4, "03": 2, "04": 5, "99": 2}, rejected={"01": 2})
    rows = clip_rows(tiny_split(), v)
    assert set(rows) == {"train", "validation", "test"}
    assert rows["validation"] == {}
    assert sorted(rows["train"]) == ["01", "02"] and sorted(rows["test"]) == ["03", "04"]
    stored = v.stored()
    for per_class in rows.values():
        for cls, r in per_class.items():
            assert r.dtype == np.int64 and np.all(np.diff(r) > 0)
            assert sorted(r.tolist()) == sorted(stored.loc[stored["class"] == cls, "row"].tolist())
            assert (r >= 0).all()
    assert [len(rows["train"]["01"]), len(rows["test"]["04"])] == [3, 5]


def test_clip_rows_refuses_another_dataset():
    v = FakeVersion("esc50", {"dog": 3})
    with pytest.raises(SplitError, match=r"Expected a split of dataset 'esc50' for /store/fake/v1.*dataset 'audiomnist'"):
        clip_rows(tiny_split(), v)


def test_classes_with_too_few_stored_clips_are_named():
    v = FakeVersion("audiomnist", {"01": 3, "02": 1, "03": 4}, rejected={"04": 3})
    with pytest.raises(SplitError, match=r"at least 2 stored clips.*2 do not: train class '02' has 1 stored clip; "
                                         r"test class '04' has 0 stored clips"):
        validate_against_version(tiny_split(), v)
    with pytest.raises(SplitError, match=r"test class '04' has 0 stored clips"):
        clip_rows(tiny_split(), v)
    assert sorted(clip_rows(tiny_split(), FakeVersion("audiomnist", {"01": 1, "02": 1, "03": 1, "04": 1}),
                            min_clips=1)["test"]) == ["03", "04"]


def test_clip_rows_on_a_real_synthetic_version(tmp_path):
    from siamese_audio.features.dummies import make_synthetic_version
    from siamese_audio.features.store import open_version

    classes = [f"{i:02d}" for i in range(1, 9)]
    v = open_version(make_synthetic_version(tmp_path, dataset="audiomnist", classes=classes,
                                            clips_per_class=3, shape=(4, 5)))
    s = make_random_split("audiomnist", seed=1, sizes="4/2/2", classes=v.classes())
    rows = clip_rows(s, v)
    assert sum(len(r) for per in rows.values() for r in per.values()) == 24
    cls = s.classes["test"][0]
    x = v.read(rows["test"][cls])
    assert x.shape == (3, 4, 5)
    assert set(v.catalog.set_index("row").loc[rows["test"][cls], "class"]) == {cls}


# --------------------------------------------------------------------------- command line


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="siamese-audio")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_split_json_and_show(tmp_path, capsys):
    out_path = tmp_path / "r.parquet"
    code, out, _ = run_cli(["split", "audiomnist", "--scheme", "report", "--out", str(out_path), "--json"], capsys)
    assert code == 0
    assert len(out.strip().splitlines()) == 1
    payload = json.loads(out)
    expected = make_report_split("audiomnist")
    assert payload["split_id"] == expected.split_id
    assert payload["dataset"] == "audiomnist" and payload["scheme"] == "report" and payload["seed"] == 0
    assert payload["classes"] == expected.classes
    assert read_split(out_path) == expected

    code, out, _ = run_cli(["split-show", str(out_path), "--json"], capsys)
    assert code == 0 and json.loads(out)["classes"]["test"] == ["04", "27", "46", "55", "56"]
    code, out, _ = run_cli(["split-show", str(out_path)], capsys)
    assert code == 0 and "test" in out and "04, 27, 46, 55, 56" in out


def test_cli_random_and_from_file(tmp_path, capsys):
    code, out, _ = run_cli(["split", "esc50", "--scheme", "random", "--seed", "3", "--sizes", "30/10/10",
                            "--out", str(tmp_path / "a.parquet"), "--json"], capsys)
    payload = json.loads(out)
    assert code == 0 and payload["seed"] == 3 and [len(payload["classes"][s]) for s in splits.SPLITS] == [30, 10, 10]
    src = tmp_path / "lists.json"
    src.write_text(json.dumps(payload))
    code, out, _ = run_cli(["split", "esc50", "--from", str(src), "--out", str(tmp_path / "b.parquet"), "--json"], capsys)
    assert code == 0 and json.loads(out)["split_id"] == payload["split_id"] and json.loads(out)["scheme"] == "file"


def test_cli_refusals_write_nothing(tmp_path, capsys):
    out_path = tmp_path / "x.parquet"
    with pytest.raises(SplitError, match=r"Expected --scheme report\|random\|metaaudio or --from FILE"):
        run_cli(["split", "esc50", "--out", str(out_path)], capsys)
    with pytest.raises(SplitError, match=r"--seed and --sizes apply to --scheme random"):
        run_cli(["split", "esc50", "--scheme", "report", "--seed", "4", "--out", str(out_path)], capsys)
    with pytest.raises(SplitError, match=r"not both"):
        run_cli(["split", "esc50", "--scheme", "random", "--from", "x.csv", "--out", str(out_path)], capsys)
    with pytest.raises(SplitError, match=r"metaaudio scheme"):
        run_cli(["split", "audiomnist", "--scheme", "metaaudio", "--out", str(out_path)], capsys)
    bad = tmp_path / "bad.csv"
    bad.write_text("class,split\n01,train\n")
    with pytest.raises(SplitError, match=r"cover all 60 classes"):
        run_cli(["split", "audiomnist", "--from", str(bad), "--out", str(out_path)], capsys)
    assert not out_path.exists()


def test_cli_with_features(tmp_path, capsys):
    from siamese_audio.features.dummies import make_synthetic_version

    classes = [f"{i:02d}" for i in range(1, 9)]
    vpath = make_synthetic_version(tmp_path / "store", dataset="audiomnist", classes=classes,
                                   clips_per_class={**{c: 3 for c in classes}, "08": 1}, shape=(4, 5))
    out_path = tmp_path / "s.parquet"
    with pytest.raises(SplitError, match=r"test class '08' has 1 stored clip|train class '08' has 1 stored clip"
                                         r"|validation class '08' has 1 stored clip"):
        run_cli(["split", "audiomnist", "--scheme", "random", "--sizes", "4/2/2", "--features", str(vpath),
                 "--out", str(out_path)], capsys)
    assert not out_path.exists()
    with pytest.raises(SplitError, match=r"add up to the 8 classes of the given class list"):
        run_cli(["split", "audiomnist", "--scheme", "random", "--features", str(vpath), "--out", str(out_path)], capsys)
    with pytest.raises(SplitError, match=r"expected a feature version of 'esc50'. It is of 'audiomnist'"):
        run_cli(["split", "esc50", "--scheme", "report", "--features", str(vpath), "--out", str(out_path)], capsys)

    good = make_synthetic_version(tmp_path / "store", dataset="audiomnist", classes=classes, clips_per_class=2,
                                  shape=(4, 5))
    code, out, _ = run_cli(["split", "audiomnist", "--scheme", "random", "--sizes", "4/2/2", "--features", str(good),
                            "--out", str(out_path), "--json"], capsys)
    payload = json.loads(out)
    assert code == 0 and payload["version_id"] == good.name
    assert sorted(c for per in payload["clip_counts"].values() for c in per) == classes
    assert {n for per in payload["clip_counts"].values() for n in per.values()} == {2}

    write_split(Split("audiomnist", "file", None, {"train": ["01", "02", "03"], "validation": ["04", "05"],
                                                   "test": ["06", "07", "08"]}), out_path)
    code, out, _ = run_cli(["split-show", str(out_path), "--features", str(vpath), "--json"], capsys)
    payload = json.loads(out)
    assert code == 1
    assert payload["clip_counts"]["train"] == {"01": 3, "02": 3, "03": 3}
    assert payload["clip_counts"]["test"]["08"] == 1
    assert payload["problems"] == ["test class '08' has 1 stored clip"]


def test_console_script_main_reports_errors_with_exit_2(tmp_path, capsys):
    from siamese_audio.cli import main

    out_path = tmp_path / "m.parquet"
    assert main(["split", "esc50", "--scheme", "metaaudio", "--out", str(out_path), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["split_id"] == make_metaaudio_split().split_id and payload["seed"] is None
    assert main(["split", "audiomnist", "--scheme", "metaaudio", "--out", str(tmp_path / "x.parquet")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "siamese-audio split: error: Expected dataset 'esc50'" in captured.err
