"""The embedded tree-crown build: split, counts, box rule, idempotence, safety."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ghmdet.data import treecrowns
from ghmdet.data.dataset import CocoDetectionDataset
from ghmdet.data.treecrown_sources import TreeCrownsError, boxes_in_tile, tile_origins
from ghmdet.data.treecrowns import TRAIN_SOURCES, VAL_SOURCES, build_treecrowns


def load_split(root: Path, split: str) -> dict[str, Any]:
    return json.loads((root / "annotations" / f"instances_{split}.json").read_text())


def file_mtimes(root: Path) -> dict[str, int]:
    return {str(path.relative_to(root)): path.stat().st_mtime_ns for path in sorted(root.rglob("*"))}


# --------------------------------------------------------------------------------------------- tiling rule


@pytest.mark.parametrize(
    ("length", "tile", "stride", "expected"),
    [
        (1000, 400, 200, [0, 200, 400, 600]),
        (1100, 400, 200, [0, 200, 400, 600, 700]),
        (1000, 400, 400, [0, 400, 600]),
        (800, 400, 400, [0, 400]),
        (400, 400, 200, [0]),
        (250, 400, 200, [0]),
    ],
)
def test_tile_origins_cover_the_axis_and_end_at_the_border(
    length: int, tile: int, stride: int, expected: list[int]
) -> None:
    origins = tile_origins(length, tile, stride)
    assert origins == expected
    covered = np.zeros(length, dtype=bool)
    for origin in origins:
        covered[origin : origin + tile] = True
    assert covered.all()
    assert origins[-1] + min(tile, length) == length


def test_tile_origins_reject_gaps() -> None:
    with pytest.raises(ValueError, match="gaps"):
        tile_origins(1000, 400, 401)


def test_box_rule_keeps_boxes_at_least_half_inside_and_counts_drops() -> None:
    tile = (100, 100, 200, 200)
    boxes = np.array(
        [
            [120, 120, 140, 140],  # fully inside: kept as is
            [180, 150, 220, 160],  # exactly 50% inside: kept, clipped to x2=200
            [181, 150, 221, 160],  # 47.5% inside: dropped
            [90, 90, 110, 110],  # 25% inside (corner): dropped
            [190, 100, 202, 110],  # 10/12 inside: kept, clipped
            [300, 300, 320, 320],  # does not touch the tile: neither kept nor dropped
            [200, 150, 220, 160],  # touches the border with zero area inside: not counted either
        ],
        dtype=float,
    )
    result = boxes_in_tile(boxes, tile, min_visible=0.5)
    assert result.source_index.tolist() == [0, 1, 4]
    np.testing.assert_allclose(result.boxes, [[20, 20, 40, 40], [80, 50, 100, 60], [90, 0, 100, 10]])
    assert result.num_clipped == 2
    assert result.num_dropped == 2


def test_box_rule_threshold_is_a_parameter() -> None:
    box = np.array([[180, 150, 220, 160]], dtype=float)  # 50% inside
    assert boxes_in_tile(box, (100, 100, 200, 200), min_visible=0.51).num_dropped == 1
    assert len(boxes_in_tile(box, (100, 100, 200, 200), min_visible=0.5).boxes) == 1


# --------------------------------------------------------------------------------------------- real build


def test_split_is_by_source_image_and_osbs_stays_in_val(treecrowns_dir: Path) -> None:
    sources = {
        split: {image["source_file"] for image in load_split(treecrowns_dir, split)["images"]}
        for split in ("train", "val")
    }
    assert sources["train"] == set(TRAIN_SOURCES)
    assert sources["val"] == set(VAL_SOURCES)
    assert not sources["train"] & sources["val"]
    assert not any("OSBS" in image.name for image in (treecrowns_dir / "images" / "train").iterdir())
    assert any("OSBS" in image.name for image in (treecrowns_dir / "images" / "val").iterdir())


def test_counts_match_manifest_files_and_documentation(treecrowns_dir: Path) -> None:
    manifest = json.loads((treecrowns_dir / "manifest.json").read_text())
    for split in ("train", "val"):
        document = load_split(treecrowns_dir, split)
        counts = manifest["counts"][split]
        assert (
            counts["tiles"]
            == len(document["images"])
            == len(list((treecrowns_dir / "images" / split).glob("*.png")))
        )
        assert counts["boxes_kept"] == len(document["annotations"])
        # Every clipped box ends on a tile edge, so there are at least as many edge-touching boxes.
        touching = sum(_touches_edge(annotation, document) for annotation in document["annotations"])
        assert 0 < counts["boxes_clipped"] <= touching
        assert counts["boxes_dropped_visibility"] > 0 and counts["source_boxes_lost"] == 0
    # The numbers quoted in docs/data.md; a change in the rule or the sources must update the docs.
    assert manifest["counts"]["train"]["tiles"] == 133
    assert manifest["counts"]["train"]["boxes_kept"] == 2255
    assert manifest["counts"]["val"]["tiles"] == 13
    assert manifest["counts"]["val"]["boxes_kept"] == 461
    assert manifest["counts"]["train"]["source_boxes"] == 574 + 37
    assert manifest["counts"]["val"]["source_boxes"] == 279 + 61
    assert {record["image"] for record in manifest["sources"]} == set(TRAIN_SOURCES + VAL_SOURCES)
    assert all(len(record["image_sha256"]) == 64 for record in manifest["sources"])


def _touches_edge(annotation: dict[str, Any], document: dict[str, Any]) -> bool:
    image = next(i for i in document["images"] if i["id"] == annotation["image_id"])
    x, y, w, h = annotation["bbox"]
    return x == 0 or y == 0 or x + w == image["width"] or y + h == image["height"]


def test_every_box_lies_inside_its_tile_and_has_one_category(treecrowns_dir: Path) -> None:
    for split in ("train", "val"):
        document = load_split(treecrowns_dir, split)
        assert document["categories"] == [{"id": 1, "name": "tree"}]
        sizes = {image["id"]: (image["width"], image["height"]) for image in document["images"]}
        for annotation in document["annotations"]:
            x, y, w, h = annotation["bbox"]
            width, height = sizes[annotation["image_id"]]
            assert w > 0 and h > 0
            assert x >= 0 and y >= 0 and x + w <= width and y + h <= height
            assert annotation["category_id"] == 1 and annotation["iscrowd"] == 0
        for image in document["images"]:
            with Image.open(treecrowns_dir / "images" / split / image["file_name"]) as tile:
                assert tile.size == (image["width"], image["height"]) == (400, 400)


def test_voc_coordinates_are_used_as_given(treecrowns_dir: Path) -> None:
    # SOAP_061.xml's first object is xmin=149 ymin=105 xmax=173 ymax=129; SOAP_061 is a single 400x400 tile.
    document = load_split(treecrowns_dir, "train")
    soap = next(image for image in document["images"] if image["source_file"] == "SOAP_061.png")
    boxes = [a["bbox"] for a in document["annotations"] if a["image_id"] == soap["id"]]
    assert [149.0, 105.0, 24.0, 24.0] in boxes
    assert len(boxes) == 37  # 28 "Dead" + 9 "Alive", all mapped to "tree"


def test_build_loads_through_the_strict_coco_path(treecrowns_dir: Path) -> None:
    for split in ("train", "val"):
        dataset = CocoDetectionDataset(
            treecrowns_dir / "images" / split, treecrowns_dir / "annotations" / f"instances_{split}.json"
        )
        assert dataset.num_classes == 1 and dataset.repairs == dict.fromkeys(dataset.repairs, 0)


def test_second_build_does_not_rewrite(treecrowns_dir: Path) -> None:
    before = file_mtimes(treecrowns_dir)
    assert build_treecrowns(treecrowns_dir) == treecrowns_dir
    assert file_mtimes(treecrowns_dir) == before


def test_refuses_to_replace_a_build_with_other_parameters(treecrowns_dir: Path) -> None:
    before = file_mtimes(treecrowns_dir)
    with pytest.raises(TreeCrownsError, match=r"tile_size: existing 400 vs requested 300.*overwrite=True"):
        build_treecrowns(treecrowns_dir, tile_size=300)
    assert file_mtimes(treecrowns_dir) == before


def test_refuses_to_replace_unrelated_files(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(TreeCrownsError, match="not a tree-crown build"):
        build_treecrowns(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_missing_deepforest_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TreeCrownsError, match=r"pip install --no-deps deepforest==2\.1\.0"):
        build_treecrowns(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_prints_counts(treecrowns_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert treecrowns.main(["--out", str(treecrowns_dir)]) == 0
    output = capsys.readouterr().out
    assert "| train | 2 | 611 | 133 |" in output


# --------------------------------------------------------------------------------------------- fake sources


def write_fake_sources(source_dir: Path, bad_name_in: str | None = None) -> None:
    """Four small PNG/VOC pairs with the real file names (fast builds for overwrite/interrupt tests)."""
    source_dir.mkdir(parents=True, exist_ok=True)
    for index, file_name in enumerate(TRAIN_SOURCES + VAL_SOURCES):
        width, height = 120 + 10 * index, 100
        Image.fromarray(np.full((height, width, 3), 40 * index, dtype=np.uint8)).save(source_dir / file_name)
        name = "Car" if file_name == bad_name_in else "Tree"
        objects = "".join(
            f"<object><name>{label}</name><bndbox><xmin>{x}</xmin><ymin>10</ymin><xmax>{x + 20}</xmax>"
            f"<ymax>30</ymax></bndbox></object>"
            for label, x in (("Alive", 5), (name, 50))
        )
        xml = (
            f"<annotation><size><width>{width}</width><height>{height}</height></size>{objects}</annotation>"
        )
        (source_dir / file_name).with_suffix(".xml").write_text(xml)


def test_overwrite_replaces_a_different_build(tmp_path: Path) -> None:
    write_fake_sources(tmp_path / "src")
    out = build_treecrowns(tmp_path / "out", tile_size=64, train_stride=32, source_dir=tmp_path / "src")
    first = json.loads((out / "manifest.json").read_text())
    assert first["counts"]["train"]["tiles"] == 3 * 3 + 4 * 3  # widths 120 and 130, height 100, stride 32
    build_treecrowns(out, tile_size=100, train_stride=50, source_dir=tmp_path / "src", overwrite=True)
    second = json.loads((out / "manifest.json").read_text())
    assert second["parameters"]["tile_size"] == 100
    assert all(Image.open(p).size[1] == 100 for p in (out / "images" / "train").glob("*.png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # no temp dirs left behind


def test_unknown_voc_name_names_file_and_object(tmp_path: Path) -> None:
    write_fake_sources(tmp_path / "src", bad_name_in="OSBS_029.png")
    with pytest.raises(TreeCrownsError, match=r"OSBS_029\.xml: object #1: name 'Car'"):
        build_treecrowns(tmp_path / "out", source_dir=tmp_path / "src")
    # The failed build left neither a dataset nor its temporary folder.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_interrupted_overwrite_keeps_the_old_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fake_sources(tmp_path / "src")
    out = build_treecrowns(tmp_path / "out", tile_size=64, train_stride=32, source_dir=tmp_path / "src")
    before = file_mtimes(out)
    calls = {"count": 0}
    real_read_voc = treecrowns.read_voc

    def failing_read_voc(path: Path) -> Any:
        calls["count"] += 1
        if calls["count"] == 3:
            raise KeyboardInterrupt  # an interruption half-way through the new build
        return real_read_voc(path)

    monkeypatch.setattr(treecrowns, "read_voc", failing_read_voc)
    with pytest.raises(KeyboardInterrupt):
        build_treecrowns(out, tile_size=100, train_stride=50, source_dir=tmp_path / "src", overwrite=True)
    assert file_mtimes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]
