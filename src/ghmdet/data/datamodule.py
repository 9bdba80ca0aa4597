"""The LightningDataModule of every COCO-format set, and the builders of the embedded sets it can run."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from ghmdet.data.annotations import BoxPolicy, DatasetError, read_num_classes
from ghmdet.data.dataset import CocoDetectionDataset, collate_detection
from ghmdet.data.resumable import ResumableDataLoader, ResumableRandomSampler, derive_seed, process_group
from ghmdet.data.samplers import eval_sampler
from ghmdet.data.transforms import build_train_transforms


def _prepare_treecrowns(root: Path) -> None:
    from ghmdet.data.treecrowns import build_treecrowns

    build_treecrowns(root)


def _prepare_synthetic(root: Path) -> None:
    from ghmdet.data.synthetic import make_synthetic_coco

    make_synthetic_coco(root)


def _prepare_digits(root: Path) -> None:
    from ghmdet.data.digits import DigitsError, build_digits

    try:
        build_digits(root)
    except DigitsError as err:  # a missing or corrupt source package: one line naming it
        raise DatasetError(str(err)) from err


# Builders that ``DetectionDataModule(prepare=...)`` can run in ``prepare_data`` when the data is missing.
PREPARERS: dict[str, Callable[[Path], None]] = {
    "treecrowns": _prepare_treecrowns,
    "synthetic": _prepare_synthetic,
    "digits": _prepare_digits,
}


class DetectionDataModule(L.LightningDataModule):
    """COCO-format train/val/test loaders; every argument is a plain value so Hydra can instantiate it.

    Paths are relative to ``root`` (absolute ones are used as given). ``test_*`` default to the val split.
    ``limit_train`` / ``limit_val`` keep the first N images (``limit_val`` also applies to the test split).
    ``prepare`` names a builder run in ``prepare_data`` when the annotation files are missing
    (``"treecrowns"``: the embedded set; ``"synthetic"``: the tiny test set). ``seed`` fixes the shuffling
    generator of the train loader. ``setup()`` validates every split it loads, and ``setup("fit")`` loads the
    test split too, so bad data (in any split) fails before training starts.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        train_images: str,
        train_annotations: str,
        val_images: str,
        val_annotations: str,
        test_images: str | None = None,
        test_annotations: str | None = None,
        batch_size: int = 4,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        hflip_prob: float = 0.5,
        vflip_prob: float = 0.0,
        photometric: float = 0.0,
        rot90_prob: float = 0.0,
        cache_images: bool = False,
        box_policy: BoxPolicy = "error",
        limit_train: int | None = None,
        limit_val: int | None = None,
        prepare: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if prepare is not None and prepare not in PREPARERS:
            raise ValueError(f"prepare must be None or one of {sorted(PREPARERS)}, got {prepare!r}")
        if (test_images is None) != (test_annotations is None):
            raise ValueError("give both test_images and test_annotations, or neither (then val is used)")
        for name, value in (("batch_size", batch_size), ("num_workers", num_workers)):
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or value < (1 if name == "batch_size" else 0)
            ):
                raise ValueError(
                    f"{name} must be an integer >= {1 if name == 'batch_size' else 0}, got {value!r}"
                )
        self.save_hyperparameters()
        self.root = Path(root)
        self.train_images, self.train_annotations = train_images, train_annotations
        self.val_images, self.val_annotations = val_images, val_annotations
        self.test_images = test_images if test_images is not None else val_images
        self.test_annotations = test_annotations if test_annotations is not None else val_annotations
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size if val_batch_size is not None else batch_size
        self.num_workers = num_workers
        self.hflip_prob, self.vflip_prob = hflip_prob, vflip_prob
        self.photometric = photometric
        self.rot90_prob = rot90_prob
        self.cache_images = cache_images
        self.box_policy = box_policy
        self.limit_train, self.limit_val = limit_train, limit_val
        self.prepare = prepare
        self.seed = seed
        self.train_dataset: CocoDetectionDataset | None = None
        self.val_dataset: CocoDetectionDataset | None = None
        self.test_dataset: CocoDetectionDataset | None = None
        self._num_classes_read: int | None = None

    # ----------------------------------------------------------------------------------------- paths

    def path(self, relative: str) -> Path:
        """Resolve a split path against ``root``."""
        return self.root / relative

    def _missing_root_message(self) -> str:
        return (
            f"data directory not found: {self.root} (resolved: {self.root.resolve()}). "
            f"For the embedded tree crowns run `make data` or "
            f"`python -m ghmdet.data.treecrowns --out {self.root}` (or set prepare='treecrowns'); "
            "for COCO 2017 point root at the folder holding the images and annotations/."
        )

    def _check_root(self) -> None:
        if not self.root.is_dir():
            raise DatasetError(self._missing_root_message())

    def _splits(self) -> dict[str, tuple[Path, Path]]:
        return {
            "train": (self.path(self.train_images), self.path(self.train_annotations)),
            "val": (self.path(self.val_images), self.path(self.val_annotations)),
            "test": (self.path(self.test_images), self.path(self.test_annotations)),
        }

    # ----------------------------------------------------------------------------------------- lifecycle

    def prepare_data(self) -> None:
        """Run the ``prepare`` builder when any split's files are missing (Lightning: once per node)."""
        if self.prepare is None:
            return
        missing = [
            path
            for images, annotations in self._splits().values()
            for path in (images, annotations)
            if not path.exists()
        ]
        if missing:
            PREPARERS[self.prepare](self.root)

    def _dataset(self, split: str, train: bool, limit: int | None) -> CocoDetectionDataset:
        image_dir, ann_file = self._splits()[split]
        return CocoDetectionDataset(
            image_dir,
            ann_file,
            transforms=build_train_transforms(
                self.hflip_prob, self.vflip_prob, self.photometric, self.rot90_prob
            )
            if train
            else None,
            cache_images=self.cache_images,
            box_policy=self.box_policy,
            limit=limit,
        )

    def setup(self, stage: str | None = None) -> None:
        """Load and validate the splits ``stage`` needs (fit: train, val and test; validate: val; test: test).

        ``fit`` loads the test split too, so that an unreadable held-out image, a refused image mode or an
        empty test split fails before training and not after it. A held-out split (val, test) with no
        non-crowd box is refused: COCO evaluation of it gives -1 for every metric.
        """
        self._check_root()
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = self._dataset("train", train=True, limit=self.limit_train)
        if stage in (None, "fit", "validate") and self.val_dataset is None:
            self.val_dataset = self._held_out("val")
        if stage in (None, "fit", "test", "predict") and self.test_dataset is None:
            same_as_val = self._splits()["test"] == self._splits()["val"] and self.val_dataset is not None
            # The same files with the same limit: one validated dataset serves both.
            self.test_dataset = self.val_dataset if same_as_val else self._held_out("test")
        loaded = [(n, d) for n, d in self._named_datasets() if d is not None]
        reference_name, reference = loaded[0]
        for name, dataset in loaded[1:]:
            if dataset.category_ids != reference.category_ids:
                raise DatasetError(
                    f"category ids differ between splits: {reference_name} ({reference.ann_file}) has "
                    f"{reference.category_ids}, {name} ({dataset.ann_file}) has {dataset.category_ids}; "
                    "labels would not mean the same class"
                )
        if self._num_classes_read is not None and self._num_classes_read != reference.num_classes:
            raise DatasetError(
                f"num_classes read before setup ({self._num_classes_read}) differs from the validated "
                f"{reference.num_classes} of {reference.ann_file}"
            )

    def _held_out(self, split: str) -> CocoDetectionDataset:
        """A val or test dataset, refused when there is nothing to evaluate on."""
        dataset = self._dataset(split, train=False, limit=self.limit_val)
        if not any(int((record.iscrowd == 0).sum()) for record in dataset.records):
            limit = (
                "" if self.limit_val is None else f" (data.limit_val={self.limit_val} keeps {len(dataset)})"
            )
            raise DatasetError(
                f"{dataset.ann_file}: the {split} split has no non-crowd box in its {len(dataset)} images"
                f"{limit}: COCO evaluation would score -1 for every metric; give a {split} split with "
                "annotated images"
            )
        return dataset

    def _named_datasets(self) -> list[tuple[str, CocoDetectionDataset | None]]:
        return [("train", self.train_dataset), ("val", self.val_dataset), ("test", self.test_dataset)]

    # ----------------------------------------------------------------------------------------- classes

    @property
    def num_classes(self) -> int:
        """Number of categories; before ``setup`` it is read cheaply from the train annotation file."""
        for _, dataset in self._named_datasets():
            if dataset is not None:
                return dataset.num_classes
        if self._num_classes_read is None:
            self._check_root()
            self._num_classes_read = read_num_classes(self.path(self.train_annotations))
        return self._num_classes_read

    @property
    def category_ids(self) -> list[int]:
        """Contiguous label -> COCO category id (after ``setup``)."""
        return self._any_dataset().category_ids

    @property
    def category_names(self) -> list[str]:
        """Contiguous label -> category name (after ``setup``)."""
        return self._any_dataset().category_names

    def _any_dataset(self) -> CocoDetectionDataset:
        for _, dataset in self._named_datasets():
            if dataset is not None:
                return dataset
        raise RuntimeError("call setup() first")

    # ----------------------------------------------------------------------------------------- loaders

    def _loader(self, dataset: CocoDetectionDataset | None, batch_size: int, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call setup() with the matching stage before asking for this dataloader")
        common: dict[str, Any] = {
            "batch_size": batch_size,
            "num_workers": self.num_workers,
            "collate_fn": collate_detection,
            "persistent_workers": self.num_workers > 0,
            # A dedicated generator: creating an iterator (which draws the workers' base seed) never
            # consumes the training process's global RNG, so a resumed run draws the same numbers.
            "generator": torch.Generator().manual_seed(derive_seed(self.seed, 2)),
        }
        if shuffle:
            replicas, rank = process_group()
            sampler = ResumableRandomSampler(dataset, self.seed, num_replicas=replicas, rank=rank)
            return ResumableDataLoader(dataset, sampler, **common)
        # Under DDP: unpadded shards, so no image is evaluated twice (None: the plain sequential order).
        return DataLoader(dataset, sampler=eval_sampler(dataset), shuffle=False, **common)

    def train_dataloader(self) -> DataLoader:
        """Shuffled train batches of ``(list[image], list[target])``."""
        return self._loader(self.train_dataset, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Val batches in file order."""
        return self._loader(self.val_dataset, self.val_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches in file order (the val split unless test paths were given)."""
        return self._loader(self.test_dataset, self.val_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """Same as :meth:`test_dataloader`."""
        return self.test_dataloader()
