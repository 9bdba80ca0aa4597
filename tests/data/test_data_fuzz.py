"""Fuzz the COCO loader: a corrupted file either loads into consistent targets or raises DatasetError.

Two fuzzers: annotation JSON (below) and image files (truncated, bytes overwritten, garbage, empty, another
size), the latter read through the dataset as training reads them.

Corruptions: deleted fields/records, values of the wrong type (null, bool, huge ints, NaN/inf, strings, lists,
objects), small integers in numeric places (zero/negative sizes, out-of-image boxes, unknown or clashing
ids), random boxes (often degenerate or outside the image), duplicated records (duplicate ids) and JSON
text cut at a random position. Never any other exception.

``GHMDET_FUZZ_EXAMPLES=N`` sets the number of examples of each fuzzer (default 200); ``GHMDET_FUZZ_RANDOM=1``
draws new ones each run (by default the examples are derandomized so the suite is stable). Each test prints
its outcome counts (``pytest -s``): how many corrupted inputs it ran, how many loaded, how many were rejected.
"""

from __future__ import annotations

import copy
import io
import json
import os
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ghmdet.data.annotations import DatasetError
from ghmdet.data.dataset import CocoDetectionDataset

MAX_EXAMPLES = int(os.environ.get("GHMDET_FUZZ_EXAMPLES", "200"))
DERANDOMIZE = os.environ.get("GHMDET_FUZZ_RANDOM", "0") != "1"
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=DERANDOMIZE,
    suppress_health_check=[HealthCheck.too_slow],
)

ANY_JSON_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.lists(st.integers(min_value=-5, max_value=60), max_size=5),
    st.dictionaries(st.sampled_from(["id", "bbox", "x"]), st.integers(-2, 30), max_size=2),
)
SMALL_NUMBER = st.one_of(st.integers(min_value=-5, max_value=60), st.floats(min_value=-5, max_value=60))


def slots(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every (container path, key) position in the document, depth first."""
    found: list[tuple[Any, ...]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        found.append((*path, key))
        found.extend(slots(value, (*path, key)))
    return found


def container(document: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        document = document[key]
    return document


def corrupt(data: st.DataObject, document: dict[str, Any]) -> None:
    """Apply one random corruption in place."""
    annotations = document.get("annotations")
    if isinstance(annotations, list) and annotations and data.draw(st.booleans(), label="box only"):
        # Geometry alone: these files often load (under box_policy="repair"), exercising the success path.
        record = annotations[data.draw(st.integers(0, len(annotations) - 1), label="annotation")]
        if isinstance(record, dict):
            record["bbox"] = data.draw(st.lists(SMALL_NUMBER, min_size=4, max_size=4), label="bbox")
            return
    path = data.draw(st.sampled_from(slots(document)), label="slot")
    parent = container(document, path)
    key = path[-1]
    operation = data.draw(
        st.sampled_from(["delete", "any", "number", "duplicate", "swap_id"]), label="operation"
    )
    if operation == "delete":
        del parent[key]
    elif operation == "any":
        parent[key] = data.draw(ANY_JSON_VALUE, label="value")
    elif operation == "number":
        parent[key] = data.draw(SMALL_NUMBER, label="number")
    elif operation == "duplicate" and isinstance(parent, list):
        parent.append(copy.deepcopy(parent[key]))
    elif operation == "swap_id" and isinstance(parent, dict):
        # Point an id-like field at another small id: clashes, unknown references, crowd flags.
        parent[key] = data.draw(st.sampled_from([0, 1, 2, 3, 10, 20, 30, 90, 99]), label="id")


def check_dataset(dataset: CocoDetectionDataset) -> None:
    """A dataset that loaded must serve only valid targets."""
    for index in range(len(dataset)):
        record = dataset.records[index]
        try:
            image, target = dataset[index]
        except DatasetError as error:  # e.g. width/height changed so the real image no longer matches
            assert str(dataset.ann_file) in str(error)
            continue
        assert image.shape == (3, record.height, record.width)
        boxes = target["boxes"]
        assert boxes.ndim == 2 and boxes.shape[1] == 4
        assert bool((boxes[:, 2] > boxes[:, 0]).all()) and bool((boxes[:, 3] > boxes[:, 1]).all())
        assert bool((boxes[:, :2] >= 0).all())
        assert bool((boxes[:, 2] <= record.width).all()) and bool((boxes[:, 3] <= record.height).all())
        labels = target["labels"]
        assert len(labels) == len(boxes) and (
            len(labels) == 0 or 0 <= labels.min() <= labels.max() < dataset.num_classes
        )


def test_corrupted_annotation_files_load_or_raise_dataset_error(
    fuzz_base: tuple[Path, dict[str, Any]],
) -> None:
    root, valid = fuzz_base
    image_dir = root / "images"
    ann_file = root / "instances_fuzz.json"
    outcomes = {"examples": 0, "loaded": 0, "rejected": 0}

    @FUZZ_SETTINGS
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        outcomes["examples"] += 1
        document = copy.deepcopy(valid)
        for _ in range(data.draw(st.integers(min_value=1, max_value=3), label="corruptions")):
            if slots(document):
                corrupt(data, document)
        text = json.dumps(document)
        if data.draw(st.booleans(), label="truncate"):
            text = text[: data.draw(st.integers(min_value=0, max_value=len(text) - 1), label="cut")]
        ann_file.write_text(text)
        box_policy = data.draw(st.sampled_from(["error", "repair"]), label="box_policy")
        try:
            dataset = CocoDetectionDataset(image_dir, ann_file, box_policy=box_policy)
        except DatasetError as error:
            outcomes["rejected"] += 1
            assert str(ann_file) in str(error) or "image folder" in str(error)
            return
        outcomes["loaded"] += 1
        check_dataset(dataset)

    run()
    completed = outcomes["loaded"] + outcomes["rejected"]
    print(f"annotation fuzz: {completed} corrupted annotation files ran: {outcomes}")
    assert completed >= min(MAX_EXAMPLES, 150)
    assert outcomes["loaded"] > 0 and outcomes["rejected"] > 0  # both branches were exercised


def corrupt_image_bytes(data: st.DataObject, original: bytes, width: int, height: int) -> bytes:
    """One random corruption of an encoded image."""
    operation = data.draw(
        st.sampled_from(["truncate", "overwrite", "garbage", "empty", "resize", "other_format"]), label="op"
    )
    if operation == "truncate":
        return original[: data.draw(st.integers(0, len(original) - 1), label="cut")]
    if operation == "overwrite":
        corrupted = bytearray(original)
        for _ in range(data.draw(st.integers(1, 8), label="bytes")):
            corrupted[data.draw(st.integers(0, len(original) - 1), label="at")] = data.draw(
                st.integers(0, 255), label="value"
            )
        return bytes(corrupted)
    if operation == "garbage":
        return data.draw(st.binary(min_size=1, max_size=256), label="garbage")
    if operation == "empty":
        return b""
    buffer = io.BytesIO()
    if operation == "resize":  # a valid image of another size than the annotation says
        size = (width + data.draw(st.integers(1, 5), label="dw"), height)
        Image.new("RGB", size).save(buffer, format="PNG")
    else:  # a valid JPEG under the .png name, of the right size: must load
        Image.new("RGB", (width, height), color=(10, 20, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_corrupted_image_files_load_or_raise_dataset_error_naming_the_file(
    fuzz_base: tuple[Path, dict[str, Any]],
) -> None:
    root, valid = fuzz_base
    image_dir = root / "images"
    ann_file = root / "instances_fuzz_images.json"
    ann_file.write_text(json.dumps(valid))
    dataset = CocoDetectionDataset(image_dir, ann_file)  # no cache: every item decodes its file
    originals = {r.file_name: (image_dir / r.file_name).read_bytes() for r in dataset.records}
    outcomes = {"examples": 0, "loaded": 0, "rejected": 0}

    @FUZZ_SETTINGS
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        outcomes["examples"] += 1
        index = data.draw(st.integers(0, len(dataset) - 1), label="image")
        record = dataset.records[index]
        path = image_dir / record.file_name
        try:
            path.write_bytes(
                corrupt_image_bytes(data, originals[record.file_name], record.width, record.height)
            )
            try:
                image, _ = dataset[index]
            except DatasetError as error:
                outcomes["rejected"] += 1
                message = str(error)
                assert str(path) in message and f"id={record.image_id}" in message and "\n" not in message
                return
            outcomes["loaded"] += 1
            assert image.shape == (3, record.height, record.width)
        finally:
            path.write_bytes(originals[record.file_name])

    run()
    completed = outcomes["loaded"] + outcomes["rejected"]
    print(f"image fuzz: {completed} corrupted image files ran: {outcomes}")
    assert completed >= min(MAX_EXAMPLES, 150)
    assert outcomes["loaded"] > 0 and outcomes["rejected"] > 0
