"""Strict validation of COCO annotation files: every error names the file, the record, the field."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ghmdet.data.annotations import DatasetError, read_num_classes
from ghmdet.data.coco_loading import load_coco_annotations
from ghmdet.data.dataset import CocoDetectionDataset

Mutation = Callable[[dict[str, Any]], None]


def _set(path: tuple[Any, ...], value: Any) -> Mutation:
    def mutate(document: dict[str, Any]) -> None:
        node = document
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


def _delete(path: tuple[Any, ...]) -> Mutation:
    def mutate(document: dict[str, Any]) -> None:
        node = document
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return mutate


# (test id, mutation, fragments that must all appear in the message besides the file name)
CASES: list[tuple[str, Mutation, list[str]]] = [
    ("no images", _delete(("images",)), ["top level", "'images' is missing"]),
    ("no annotations", _delete(("annotations",)), ["'annotations' is missing"]),
    ("no categories", _delete(("categories",)), ["'categories' is missing"]),
    ("images not a list", _set(("images",), {"id": 1}), ["field 'images'", "must be a list"]),
    ("empty categories", _set(("categories",), []), ["'categories' is empty"]),
    ("image not an object", _set(("images", 1), 7), ["images[1]", "must be an object"]),
    ("image without id", _delete(("images", 1, "id")), ["images[1]", "'id' is missing"]),
    ("image without file_name", _delete(("images", 1, "file_name")), ["images[1] (id=20)", "'file_name'"]),
    ("image without width", _delete(("images", 1, "width")), ["images[1] (id=20)", "'width' is missing"]),
    ("image without height", _delete(("images", 0, "height")), ["images[0] (id=10)", "'height' is missing"]),
    ("image id string", _set(("images", 1, "id"), "20"), ["images[1]", "field 'id' = '20'", "integer"]),
    ("image id float", _set(("images", 1, "id"), 20.0), ["images[1]", "field 'id' = 20.0"]),
    ("image id negative", _set(("images", 1, "id"), -4), ["images[1]", "field 'id' = -4"]),
    ("image id too big", _set(("images", 1, "id"), 2**70), ["images[1]", "int64"]),
    ("width zero", _set(("images", 1, "width"), 0), ["images[1] (id=20)", "field 'width' = 0", "positive"]),
    ("height negative", _set(("images", 0, "height"), -30), ["images[0] (id=10)", "field 'height' = -30"]),
    ("width bool", _set(("images", 0, "width"), True), ["images[0] (id=10)", "field 'width' = True"]),
    ("width float", _set(("images", 0, "width"), 40.5), ["field 'width' = 40.5"]),
    (
        "file_name empty",
        _set(("images", 0, "file_name"), ""),
        ["images[0] (id=10)", "field 'file_name' = ''"],
    ),
    (
        "file_name absolute",
        _set(("images", 0, "file_name"), "/etc/passwd"),
        ["images[0] (id=10)", "relative"],
    ),
    ("file_name escapes", _set(("images", 0, "file_name"), "../a.png"), ["images[0] (id=10)", "relative"]),
    ("duplicate image id", _set(("images", 1, "id"), 10), ["images[1] (id=10)", "duplicate image id"]),
    (
        "duplicate category id",
        _set(("categories", 2, "id"), 90),
        ["categories[2] (id=90)", "duplicate category"],
    ),
    (
        "category name number",
        _set(("categories", 0, "name"), 5),
        ["categories[0] (id=90)", "field 'name' = 5"],
    ),
    (
        "duplicate annotation id",
        _set(("annotations", 2, "id"), 1),
        ["annotations[2] (id=1)", "duplicate annotation"],
    ),
    ("annotation without id", _delete(("annotations", 1, "id")), ["annotations[1]", "'id' is missing"]),
    (
        "annotation without image_id",
        _delete(("annotations", 1, "image_id")),
        ["annotations[1] (id=2)", "'image_id'"],
    ),
    (
        "annotation without bbox",
        _delete(("annotations", 1, "bbox")),
        ["annotations[1] (id=2, image_id=10)", "'bbox'"],
    ),
    (
        "annotation without category_id",
        _delete(("annotations", 3, "category_id")),
        ["annotations[3] (id=4, image_id=20)", "'category_id' is missing"],
    ),
    (
        "unknown image id",
        _set(("annotations", 0, "image_id"), 99),
        ["annotations[0] (id=1, image_id=99)", "no image"],
    ),
    (
        "unknown category",
        _set(("annotations", 0, "category_id"), 2),
        ["annotations[0] (id=1", "category_id' = 2"],
    ),
    (
        "bbox 3 numbers",
        _set(("annotations", 0, "bbox"), [1, 2, 3]),
        ["annotations[0] (id=1", "[1, 2, 3]", "4 finite"],
    ),
    ("bbox string", _set(("annotations", 0, "bbox"), "1 2 3 4"), ["annotations[0] (id=1", "'1 2 3 4'"]),
    ("bbox nested string", _set(("annotations", 1, "bbox"), [1, 2, "3", 4]), ["annotations[1] (id=2", "'3'"]),
    ("bbox NaN", _set(("annotations", 1, "bbox"), [1, 2, math.nan, 4]), ["annotations[1] (id=2", "nan"]),
    ("bbox inf", _set(("annotations", 1, "bbox"), [1, 2, 3, math.inf]), ["annotations[1] (id=2", "inf"]),
    ("bbox bool", _set(("annotations", 1, "bbox"), [1, 2, True, 4]), ["annotations[1] (id=2", "True"]),
    ("bbox null", _set(("annotations", 1, "bbox"), None), ["annotations[1] (id=2", "None"]),
    (
        "zero width",
        _set(("annotations", 1, "bbox"), [20, 10, 0, 20]),
        ["annotations[1] (id=2, image_id=10)", "zero"],
    ),
    (
        "negative height",
        _set(("annotations", 3, "bbox"), [5, 5, 3, -1]),
        ["annotations[3] (id=4, image_id=20)", "zero"],
    ),
    (
        "box past right border",
        _set(("annotations", 1, "bbox"), [35, 0, 10, 5]),
        [
            "annotations[1] (id=2, image_id=10)",
            "[35, 0, 10, 5]",
            "outside the 40x30 image",
            "box_policy='repair'",
        ],
    ),
    (
        "width below float32 resolution",
        _set(("annotations", 1, "bbox"), [30, 10, 1e-7, 5]),
        ["annotations[1] (id=2, image_id=10)", "degenerate", "float32"],
    ),
    ("box left of image", _set(("annotations", 1, "bbox"), [-3, 0, 10, 5]), ["(id=2, image_id=10)", "40x30"]),
    ("box below image", _set(("annotations", 3, "bbox"), [0, 40, 5, 5]), ["(id=4, image_id=20)", "32x32"]),
    ("iscrowd 2", _set(("annotations", 0, "iscrowd"), 2), ["annotations[0] (id=1", "field 'iscrowd' = 2"]),
    ("area negative", _set(("annotations", 0, "area"), -1), ["annotations[0] (id=1", "field 'area' = -1"]),
]


@pytest.mark.parametrize(("mutation", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_record_raises_naming_file_record_and_field(
    coco_set: Callable[..., tuple[Path, Path]],
    valid_document: dict[str, Any],
    mutation: Mutation,
    fragments: list[str],
) -> None:
    mutation(valid_document)
    image_dir, ann_file = coco_set(valid_document)
    with pytest.raises(DatasetError) as error:
        CocoDetectionDataset(image_dir, ann_file)
    message = str(error.value)
    assert str(ann_file) in message
    for fragment in fragments:
        assert fragment in message


def test_valid_document_loads(coco_set: Callable[..., tuple[Path, Path]]) -> None:
    image_dir, ann_file = coco_set()
    dataset = CocoDetectionDataset(image_dir, ann_file)
    assert len(dataset) == 3 and dataset.num_classes == 3


def test_top_level_not_an_object(coco_set: Callable[..., tuple[Path, Path]]) -> None:
    image_dir, ann_file = coco_set(text="[1, 2]")
    with pytest.raises(DatasetError, match="must be a JSON object") as error:
        CocoDetectionDataset(image_dir, ann_file)
    assert str(ann_file) in str(error.value)


def test_broken_json_reports_position(coco_set: Callable[..., tuple[Path, Path]]) -> None:
    text = json.dumps({"images": []}, indent=1)[:-3]
    image_dir, ann_file = coco_set(text=text)
    with pytest.raises(DatasetError, match=r"invalid JSON at line \d+ column \d+ \(char \d+\)") as error:
        CocoDetectionDataset(image_dir, ann_file)
    assert str(ann_file) in str(error.value)


def test_non_utf8_file(coco_set: Callable[..., tuple[Path, Path]]) -> None:
    image_dir, ann_file = coco_set()
    ann_file.write_bytes(b'{"images": "\xff"}')
    with pytest.raises(DatasetError, match="not UTF-8") as error:
        CocoDetectionDataset(image_dir, ann_file)
    assert str(ann_file) in str(error.value)


def test_missing_annotation_file(coco_set: Callable[..., tuple[Path, Path]]) -> None:
    image_dir, ann_file = coco_set()
    missing = ann_file.with_name("instances_nope.json")
    with pytest.raises(DatasetError, match="annotation file not found") as error:
        CocoDetectionDataset(image_dir, missing)
    assert "instances_nope.json" in str(error.value)


def test_missing_image_folder(coco_set: Callable[..., tuple[Path, Path]], tmp_path: Path) -> None:
    _, ann_file = coco_set()
    with pytest.raises(DatasetError, match="image folder not found") as error:
        CocoDetectionDataset(tmp_path / "no_such_dir", ann_file)
    assert "no_such_dir" in str(error.value)


def test_missing_image_file(
    coco_set: Callable[..., tuple[Path, Path]], valid_document: dict[str, Any]
) -> None:
    valid_document["images"][2]["file_name"] = "gone.png"
    image_dir, ann_file = coco_set(valid_document)
    with pytest.raises(DatasetError, match=r"image id=30: file_name 'gone\.png' not found") as error:
        CocoDetectionDataset(image_dir, ann_file)
    assert str(ann_file) in str(error.value)


def test_overshoot_within_one_pixel_is_clipped_without_repair(
    coco_set: Callable[..., tuple[Path, Path]], valid_document: dict[str, Any]
) -> None:
    valid_document["annotations"][1]["bbox"] = [20, 10, 20.6, 20.9]  # x2 = 40.6 > 40, y2 = 30.9 > 30
    image_dir, ann_file = coco_set(valid_document)
    dataset = CocoDetectionDataset(image_dir, ann_file)
    assert dataset.tolerance_clips == 1
    assert dataset.repairs == {"clipped_to_image": 0, "dropped_degenerate": 0, "dropped_outside": 0}
    assert dataset.get_target(0)["boxes"][1].tolist() == [20.0, 10.0, 40.0, 30.0]


def test_overshoot_beyond_tolerance_is_an_error(
    coco_set: Callable[..., tuple[Path, Path]], valid_document: dict[str, Any]
) -> None:
    valid_document["annotations"][1]["bbox"] = [20, 10, 21.5, 20]
    image_dir, ann_file = coco_set(valid_document)
    with pytest.raises(DatasetError, match="outside the 40x30 image"):
        CocoDetectionDataset(image_dir, ann_file)


def test_repair_policy_clips_drops_counts_and_warns_once(
    coco_set: Callable[..., tuple[Path, Path]],
    valid_document: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    annotations = valid_document["annotations"]
    annotations[0]["bbox"] = [35, -4, 10, 10]  # partly outside: clipped to [35, 0, 40, 6]
    annotations[1]["bbox"] = [20, 10, 0, 5]  # zero width: dropped
    annotations[3]["bbox"] = [50, 50, 5, 5]  # entirely outside the 32x32 image: dropped
    annotations.append({"id": 5, "image_id": 30, "category_id": 3, "bbox": [-10, 0, 12, 30]})  # clipped
    image_dir, ann_file = coco_set(valid_document)
    with caplog.at_level(logging.WARNING, logger="ghmdet.data.coco_loading"):
        dataset = CocoDetectionDataset(image_dir, ann_file, box_policy="repair")
    assert dataset.repairs == {"clipped_to_image": 2, "dropped_degenerate": 1, "dropped_outside": 1}
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "'clipped_to_image': 2" in warnings[0].getMessage() and str(ann_file) in warnings[0].getMessage()
    assert dataset.get_target(0)["boxes"].tolist() == [[35.0, 0.0, 40.0, 6.0]]
    assert dataset.get_target(1)["boxes"].tolist() == [[0.0, 0.0, 32.0, 32.0]]  # only the crowd box is left
    assert dataset.get_target(2)["boxes"].tolist() == [[0.0, 0.0, 2.0, 24.0]]


def test_valid_file_under_repair_policy_changes_nothing(
    coco_set: Callable[..., tuple[Path, Path]], caplog: pytest.LogCaptureFixture
) -> None:
    image_dir, ann_file = coco_set()
    with caplog.at_level(logging.WARNING):
        dataset = CocoDetectionDataset(image_dir, ann_file, box_policy="repair")
    assert not any(dataset.repairs.values()) and not caplog.records


def test_unknown_box_policy(coco_set: Callable[..., tuple[Path, Path]]) -> None:
    _, ann_file = coco_set()
    with pytest.raises(ValueError, match="box_policy"):
        load_coco_annotations(ann_file, box_policy="ignore")  # type: ignore[arg-type]


def test_read_num_classes(coco_set: Callable[..., tuple[Path, Path]], valid_document: dict[str, Any]) -> None:
    _, ann_file = coco_set(valid_document)
    assert read_num_classes(ann_file) == 3


def test_read_num_classes_falls_back_when_the_key_appears_elsewhere(
    coco_set: Callable[..., tuple[Path, Path]], valid_document: dict[str, Any]
) -> None:
    # Categories first, and a later nested field also called "categories": the cheap scan finds the nested
    # one, rejects it, and the full parse gives the right answer.
    document = {"categories": valid_document["categories"], **valid_document}
    document["images"][0]["categories"] = "not a list"
    _, ann_file = coco_set(document)
    assert read_num_classes(ann_file) == 3


def test_read_num_classes_errors_name_the_file(
    coco_set: Callable[..., tuple[Path, Path]], tmp_path: Path
) -> None:
    with pytest.raises(DatasetError, match="annotation file not found"):
        read_num_classes(tmp_path / "missing.json")
    _, ann_file = coco_set(text='{"images": [], "categories": [{"id": 1}, {"id": 1}]}')
    with pytest.raises(DatasetError, match="duplicate category id") as error:
        read_num_classes(ann_file)
    assert str(ann_file) in str(error.value)
    _, ann_file = coco_set(text="")
    with pytest.raises(DatasetError, match="invalid JSON"):
        read_num_classes(ann_file)
