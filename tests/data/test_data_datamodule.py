"""DetectionDataModule: batches, num_classes before setup, errors before training, Hydra instantiation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from ghmdet.data.annotations import DatasetError
from ghmdet.data.datamodule import DetectionDataModule
from ghmdet.data.dataset import CocoDetectionDataset
from ghmdet.data.synthetic import make_synthetic_coco

SPLIT_PATHS = {
    "train_images": "images/train",
    "train_annotations": "annotations/instances_train.json",
    "val_images": "images/val",
    "val_annotations": "annotations/instances_val.json",
}


def datamodule(root: Path, **kwargs: Any) -> DetectionDataModule:
    return DetectionDataModule(root=str(root), **(SPLIT_PATHS | kwargs))


@pytest.fixture
def synthetic_root(tmp_path: Path) -> Path:
    return make_synthetic_coco(tmp_path / "synthetic", num_train=5, num_val=3, size=64, num_classes=2)


def test_batches_are_tuples_of_lists_with_the_right_types(synthetic_root: Path) -> None:
    module = datamodule(synthetic_root, batch_size=2, val_batch_size=3)
    module.setup("fit")
    images, targets = next(iter(module.train_dataloader()))
    assert isinstance(images, list) and isinstance(targets, list) and len(images) == len(targets) == 2
    for image, target in zip(images, targets, strict=True):
        assert image.dtype == torch.float32 and image.shape == (3, 64, 64)
        assert target["boxes"].dtype == torch.float32 and target["boxes"].shape[1] == 4
        assert target["labels"].dtype == torch.int64 and target["labels"].max() < module.num_classes
        assert target["image_id"].dtype == torch.int64
    val_images, _ = next(iter(module.val_dataloader()))
    assert len(val_images) == 3
    assert [len(batch[0]) for batch in module.train_dataloader()] == [2, 2, 1]


def test_num_classes_is_readable_before_setup(synthetic_root: Path) -> None:
    module = datamodule(synthetic_root)
    assert module.num_classes == 2
    module.setup("fit")
    assert module.num_classes == 2
    assert module.category_ids == [1, 2] and module.category_names == ["class_0", "class_1"]


def test_setup_stages_load_only_what_they_need(synthetic_root: Path) -> None:
    module = datamodule(synthetic_root)
    module.setup("validate")
    assert module.train_dataset is None and module.val_dataset is not None
    with pytest.raises(RuntimeError, match="setup"):
        module.train_dataloader()
    module.setup("test")
    assert module.test_dataset is not None
    assert module.test_dataset.ann_file == module.val_dataset.ann_file  # test defaults to the val split
    assert module.train_dataset is None


def test_train_loader_flips_and_shuffles_reproducibly(synthetic_root: Path) -> None:
    def order(seed: int) -> list[int]:
        module = datamodule(synthetic_root, batch_size=1, hflip_prob=0.0, seed=seed)
        module.setup("fit")
        return [int(targets[0]["image_id"]) for _, targets in module.train_dataloader()]

    assert order(3) == order(3)
    assert sorted(order(3)) == [1, 2, 3, 4, 5]
    assert any(order(3) != order(seed) for seed in range(4, 10))
    module = datamodule(synthetic_root, hflip_prob=1.0)
    module.setup("fit")
    assert module.train_dataset.transforms is not None and module.val_dataset.transforms is None
    flipped = module.train_dataset[0][1]["boxes"]
    unflipped = CocoDetectionDataset(
        synthetic_root / "images/train", synthetic_root / SPLIT_PATHS["train_annotations"]
    )
    original = unflipped[0][1]["boxes"]
    torch.testing.assert_close(flipped[:, [0, 2]], 64 - original[:, [2, 0]])


def test_limits_take_the_first_images(synthetic_root: Path) -> None:
    module = datamodule(synthetic_root, limit_train=2, limit_val=1)
    module.setup()
    assert module.train_dataset.image_ids == [1, 2]
    assert module.val_dataset.image_ids == [1] and module.test_dataset.image_ids == [1]


def test_workers_are_persistent(synthetic_root: Path) -> None:
    module = datamodule(synthetic_root, num_workers=1)
    module.setup("fit")
    loader = module.train_dataloader()
    assert loader.persistent_workers and loader.num_workers == 1
    images, _ = next(iter(loader))
    assert images[0].shape == (3, 64, 64)
    in_process = datamodule(synthetic_root)
    in_process.setup("fit")
    assert not in_process.train_dataloader().persistent_workers


def test_missing_root_says_how_to_build_the_data(tmp_path: Path) -> None:
    module = datamodule(tmp_path / "nowhere")
    for action in (lambda: module.setup("fit"), lambda: module.num_classes):
        with pytest.raises(DatasetError) as error:
            action()
        message = str(error.value)
        assert "nowhere" in message and "make data" in message
        assert f"python -m ghmdet.data.treecrowns --out {tmp_path / 'nowhere'}" in message


def test_invalid_annotations_fail_in_setup(synthetic_root: Path) -> None:
    ann_file = synthetic_root / SPLIT_PATHS["val_annotations"]
    document = json.loads(ann_file.read_text())
    document["annotations"][0]["bbox"][2] = -1
    ann_file.write_text(json.dumps(document))
    module = datamodule(synthetic_root)
    with pytest.raises(DatasetError, match=r"instances_val\.json: annotations\[0\] \(id=1, image_id=1\)"):
        module.setup("fit")
    module = datamodule(synthetic_root, box_policy="repair")
    module.setup("fit")
    assert module.val_dataset.repairs["dropped_degenerate"] == 1


def test_splits_must_share_categories(synthetic_root: Path) -> None:
    ann_file = synthetic_root / SPLIT_PATHS["val_annotations"]
    document = json.loads(ann_file.read_text())
    document["categories"].append({"id": 7, "name": "extra"})
    ann_file.write_text(json.dumps(document))
    with pytest.raises(
        DatasetError, match=r"category ids differ between splits: train .* \[1, 2\], val .* \[1, 2, 7\]"
    ):
        datamodule(synthetic_root).setup("fit")


def test_prepare_builds_missing_synthetic_data(tmp_path: Path) -> None:
    module = datamodule(tmp_path / "made", prepare="synthetic")
    module.prepare_data()
    module.setup("fit")
    assert len(module.train_dataset) == 4 and len(module.val_dataset) == 2


def test_prepare_treecrowns_leaves_an_existing_build_alone(treecrowns_dir: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in treecrowns_dir.rglob("*")}
    module = datamodule(treecrowns_dir, prepare="treecrowns", limit_val=2, val_batch_size=2)
    module.prepare_data()
    assert {p: p.stat().st_mtime_ns for p in treecrowns_dir.rglob("*")} == before
    assert module.num_classes == 1
    module.setup("validate")
    images, targets = next(iter(module.val_dataloader()))
    assert [image.shape for image in images] == [(3, 400, 400)] * 2
    assert all(target["labels"].eq(0).all() for target in targets)


def test_constructor_rejects_bad_values(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="prepare"):
        datamodule(tmp_path, prepare="imagenet")
    with pytest.raises(ValueError, match="batch_size"):
        datamodule(tmp_path, batch_size=0)
    with pytest.raises(ValueError, match="test_images"):
        datamodule(tmp_path, test_images="images/val")


@pytest.mark.parametrize(
    "target", ["ghmdet.data.DetectionDataModule", "ghmdet.data.datamodule.DetectionDataModule"]
)
def test_hydra_can_instantiate_it(synthetic_root: Path, target: str) -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    config = OmegaConf.create(
        {"_target_": target, "root": str(synthetic_root), **SPLIT_PATHS, "batch_size": 2}
    )
    module = instantiate(config)
    assert isinstance(module, DetectionDataModule) and module.num_classes == 2
    assert module.hparams["batch_size"] == 2


def _write_val_variant(root: Path, name: str, edit: Any) -> str:
    """A copy of the val annotation file changed by ``edit(document)``; returns its path relative to root."""
    document = json.loads((root / SPLIT_PATHS["val_annotations"]).read_text())
    edit(document)
    (root / "annotations" / name).write_text(json.dumps(document))
    return f"annotations/{name}"


def _drop_annotations(document: dict[str, Any]) -> None:
    document["annotations"] = []


def _crowds_only(document: dict[str, Any]) -> None:
    for annotation in document["annotations"]:
        annotation["iscrowd"] = 1


@pytest.mark.parametrize("edit", [_drop_annotations, _crowds_only], ids=["no-annotations", "crowds-only"])
def test_a_held_out_split_with_nothing_to_evaluate_is_refused_before_training(
    synthetic_root: Path, edit: Any
) -> None:
    relative = _write_val_variant(synthetic_root, "instances_val_empty.json", edit)
    module = datamodule(synthetic_root, val_annotations=relative)
    with pytest.raises(DatasetError) as error:
        module.setup("fit")
    message = str(error.value)
    assert message.startswith(
        f"{synthetic_root / relative}: the val split has no non-crowd box in its 3 images"
    )
    assert "-1 for every metric" in message and "\n" not in message


def test_a_limit_that_keeps_no_annotated_image_is_refused(synthetic_root: Path) -> None:
    with pytest.raises(DatasetError, match=r"the val split has no non-crowd box .*data\.limit_val=0 keeps 0"):
        datamodule(synthetic_root, limit_val=0).setup("validate")


def test_an_empty_test_split_is_refused_at_fit_not_after_training(synthetic_root: Path) -> None:
    relative = _write_val_variant(synthetic_root, "instances_test.json", _drop_annotations)
    module = datamodule(synthetic_root, test_images="images/val", test_annotations=relative)
    with pytest.raises(DatasetError, match=r"instances_test\.json: the test split has no non-crowd box"):
        module.setup("fit")


def test_an_unreadable_test_image_is_found_at_fit(synthetic_root: Path) -> None:
    test_images = synthetic_root / "images" / "test"
    test_images.mkdir()
    for path in (synthetic_root / "images" / "val").iterdir():
        (test_images / path.name).write_bytes(path.read_bytes())
    victim = sorted(test_images.iterdir())[-1]
    victim.write_bytes(b"not an image")
    module = datamodule(
        synthetic_root, test_images="images/test", test_annotations=SPLIT_PATHS["val_annotations"]
    )
    with pytest.raises(DatasetError, match=rf"{victim}: cannot read image id=\d+"):
        module.setup("fit")


def test_test_split_defaults_to_the_validated_val_dataset(synthetic_root: Path) -> None:
    module = datamodule(synthetic_root)
    module.setup("fit")
    assert module.test_dataset is module.val_dataset  # the same files and limit: loaded and checked once
