"""The one dataset of every COCO-format set (COCO 2017, the tree crowns, the embedded builders' sets).

``CocoDetectionDataset`` returns ``(image, target)``:

- ``image``: float32 ``[3, H, W]`` in ``[0, 1]``, RGB, native resolution (resizing and normalisation belong
  to the model's own transform), decoded by the rules of :mod:`ghmdet.data.images`.
- ``target``: ``boxes`` float32 ``[K, 4]`` xyxy absolute pixels; ``labels`` int64 ``[K]`` contiguous
  ``0..C-1`` (the position of the COCO category id in the sorted id list, ``dataset.category_ids``);
  ``image_id`` int64 scalar (the COCO id); ``iscrowd`` int64 ``[K]``; ``area`` float32 ``[K]``.

Images without annotations are kept (they train with all anchors negative); their ``boxes`` is ``[0, 4]``.
Crowd boxes are kept with ``iscrowd=1``: the model ignores them in matching, the COCO metric uses them.
Validation rules and the ``box_policy`` are described in :mod:`ghmdet.data.annotations`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ghmdet.data.annotations import BoxPolicy, DatasetError
from ghmdet.data.atomic_build import sha256_file
from ghmdet.data.coco_loading import CocoAnnotations, check_image_files, load_coco_annotations
from ghmdet.data.images import (
    IMAGE_READ_ERRORS,
    decode_rgb,
    exif_orientation,
    image_mode_problem,
    size_problem,
)
from ghmdet.data.packed import ImageRecord
from ghmdet.data.resumable import SampleKey, private_torch_rng
from ghmdet.data.transforms import Target, Transform
from ghmdet.files import write_text_atomic

logger = logging.getLogger(__name__)
_CHECK_MANIFEST_VERSION = 1


class CocoDetectionDataset(Dataset[tuple[torch.Tensor, Target]]):
    """Detection dataset over a COCO instances file, validated strictly at construction.

    Args:
        image_dir: folder holding the images (``file_name`` is relative to it).
        ann_file: COCO instances JSON.
        transforms: callable on ``(image, target)``, e.g. :class:`ghmdet.data.transforms.Compose`.
        cache_images: decode every image once at construction and keep them as uint8 tensors (small sets;
            forked dataloader workers share the cache copy-on-write).
        box_policy: ``"error"`` or ``"repair"`` for degenerate / out-of-image boxes.
        limit: keep only the first ``limit`` images (file order) after validating the whole file.
        checked_manifest: a JSON file recording that the image files passed the start-up check (the folder
            listing and every served image's header). When it matches (the annotation file's path, size,
            mtime and SHA-256, the image folder's path and mtime, and at least as many images checked),
            the check is skipped; otherwise it runs and, passed, the manifest is written (atomically).
            E.g. ``annotations/instances_train2017.checked.json``: a restart then reads no image file.
            Not detected: an image rewritten in place under the same name (the folder's mtime stays);
            delete the manifest after such an edit. The annotations are validated in full either way.
    """

    def __init__(
        self,
        image_dir: str | os.PathLike[str],
        ann_file: str | os.PathLike[str],
        transforms: Transform | None = None,
        cache_images: bool = False,
        box_policy: BoxPolicy = "error",
        limit: int | None = None,
        checked_manifest: str | os.PathLike[str] | None = None,
    ) -> None:
        self.image_dir = Path(image_dir)
        self.ann_file = Path(ann_file)
        if not self.image_dir.is_dir():
            raise DatasetError(f"image folder not found: {self.image_dir} (images of {self.ann_file})")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ValueError(f"limit must be a non-negative integer or None, got {limit!r}")
        # Keyed before loading, so that a file changed meanwhile does not pass as checked.
        manifest = None if checked_manifest is None else Path(checked_manifest)
        check_key = None if manifest is None else self._image_check_key()
        annotations: CocoAnnotations = load_coco_annotations(self.ann_file, box_policy=box_policy)
        # Packed arrays, not a list of records: forked workers then share them (see PackedImages).
        self.records: Sequence[ImageRecord] = (
            annotations.images if limit is None else annotations.images[:limit]
        )
        if manifest is None or not _manifest_covers(manifest, check_key, len(self.records)):
            check_image_files(annotations, self.image_dir)
            for record in self.records:
                self._check_header(record)
            if manifest is not None:
                _write_manifest(manifest, {"key": check_key, "images_checked": len(self.records)})
        self.categories = annotations.categories
        self.category_ids: list[int] = annotations.category_ids
        self.category_names: list[str] = [category["name"] for category in annotations.categories]
        self.repairs: dict[str, int] = dict(annotations.repairs)
        self.tolerance_clips = annotations.tolerance_clips
        self.box_policy = box_policy
        self.transforms = transforms
        self._sorted_category_ids = np.asarray(self.category_ids, dtype=np.int64)
        self._cache: list[torch.Tensor] | None = None
        if cache_images:
            self._cache = [self._read_image(record) for record in self.records]

    def _image_check_key(self) -> dict[str, Any]:
        """What a passed image-file check depends on (see ``checked_manifest``)."""
        try:
            ann_stat, folder_stat = self.ann_file.stat(), self.image_dir.stat()
        except OSError:
            return {}  # the loader names the missing file; an empty key matches no manifest
        return {
            "version": _CHECK_MANIFEST_VERSION,
            "annotation_file": str(self.ann_file.resolve()),
            "size": ann_stat.st_size,
            "mtime_ns": ann_stat.st_mtime_ns,
            "sha256": sha256_file(self.ann_file),
            "image_dir": str(self.image_dir.resolve()),
            "image_dir_mtime_ns": folder_stat.st_mtime_ns,
        }

    @property
    def num_classes(self) -> int:
        """Number of categories (labels are ``0..num_classes-1``)."""
        return len(self.category_ids)

    @property
    def image_ids(self) -> list[int]:
        """COCO image ids in dataset order."""
        return [record.image_id for record in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def _image_error(self, record: ImageRecord, exc: BaseException) -> DatasetError:
        return DatasetError(
            f"{self.image_dir / record.file_name}: cannot read image id={record.image_id} "
            f"(listed in {self.ann_file}): {type(exc).__name__}: {' '.join(str(exc).split())}"
        )

    def _refuse(self, record: ImageRecord, problem: str | None) -> None:
        if problem is not None:
            raise DatasetError(f"{self.image_dir / record.file_name}: image id={record.image_id} {problem}")

    def _check_header(self, record: ImageRecord) -> None:
        """Refuse an image whose header shows a refused mode or a size that does not fit (pixels not read)."""
        late_exif = False
        try:
            with Image.open(self.image_dir / record.file_name) as opened:
                problem = image_mode_problem(opened)
                if problem is not None:
                    problem = f"(listed in {self.ann_file}): {problem}"
                else:
                    problem = size_problem(record, self.ann_file, opened.size, exif_orientation(opened))
                    late_exif = opened.format == "PNG" and "exif" not in opened.info
        except IMAGE_READ_ERRORS as exc:
            raise self._image_error(record, exc) from exc
        if problem is not None and late_exif:
            self._read_image(record)  # its EXIF may follow the pixels: decode it for the verdict
            return
        self._refuse(record, problem)

    def _read_image(self, record: ImageRecord) -> torch.Tensor:
        path = self.image_dir / record.file_name
        try:
            with Image.open(path) as opened:
                problem = image_mode_problem(opened)
                if problem is None:
                    stored_size = opened.size
                    pixels, orientation = decode_rgb(opened)
                    problem = size_problem(record, self.ann_file, stored_size, orientation)
                else:
                    problem = f"(listed in {self.ann_file}): {problem}"
        except IMAGE_READ_ERRORS as exc:
            raise self._image_error(record, exc) from exc
        self._refuse(record, problem)
        return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()

    def load_image(self, index: int) -> torch.Tensor:
        """The uint8 ``[3, H, W]`` image at ``index`` (from the cache when enabled)."""
        if self._cache is not None:
            return self._cache[index]
        return self._read_image(self.records[index])

    def labels_of(self, category_ids: np.ndarray) -> np.ndarray:
        """Map COCO category ids to contiguous labels (all ids were validated against ``categories``)."""
        return np.searchsorted(self._sorted_category_ids, category_ids).astype(np.int64)

    def get_target(self, index: int) -> Target:
        """The target dict of image ``index`` before transforms."""
        record = self.records[index]
        return {
            "boxes": torch.from_numpy(record.boxes.copy()),
            "labels": torch.from_numpy(self.labels_of(record.category_ids)),
            "image_id": torch.tensor(record.image_id, dtype=torch.int64),
            "iscrowd": torch.from_numpy(record.iscrowd.copy()),
            "area": torch.from_numpy(record.area.copy()),
        }

    def __getitem__(self, key: int | SampleKey) -> tuple[torch.Tensor, Target]:
        """``(image, target)`` of ``key``: an index, or ``(index, seed)`` to draw the augmentation from its
        own RNG stream seeded with ``seed`` (what :class:`~ghmdet.data.resumable.ResumableRandomSampler`
        yields)."""
        index, seed = (key, None) if isinstance(key, int) else key
        image = self.load_image(index).to(torch.float32).div_(255.0)
        target = self.get_target(index)
        if self.transforms is not None:
            if seed is None:
                image, target = self.transforms(image, target)
            else:
                with private_torch_rng(seed):
                    image, target = self.transforms(image, target)
        return image, target

    def coco_ground_truth(self) -> dict[str, Any]:
        """COCO-format dict of exactly what this dataset serves (after ``limit`` and repairs).

        Original COCO image/category/annotation ids are kept, so predictions mapped back with
        ``category_ids[label]`` can be scored with ``pycocotools.coco.COCO`` built from this dict.
        """
        images, annotations = [], []
        for record in self.records:
            images.append(
                {
                    "id": record.image_id,
                    "file_name": record.file_name,
                    "width": record.width,
                    "height": record.height,
                }
            )
            for box, category_id, crowd, area, annotation_id in zip(
                record.boxes.tolist(),
                record.category_ids.tolist(),
                record.iscrowd.tolist(),
                record.area.tolist(),
                record.annotation_ids.tolist(),
                strict=True,
            ):
                x1, y1, x2, y2 = box
                annotations.append(
                    {
                        "id": annotation_id,
                        "image_id": record.image_id,
                        "category_id": category_id,
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": area,
                        "iscrowd": crowd,
                    }
                )
        return {
            "info": {"description": f"ground truth served from {self.ann_file}"},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": [dict(category) for category in self.categories],
        }


def _manifest_covers(manifest: Path, key: dict[str, Any] | None, images: int) -> bool:
    """Whether ``manifest`` records a passed check under ``key`` of at least ``images`` images."""
    try:
        content = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, unreadable or corrupt: check again and rewrite it
        return False
    return (
        bool(key)
        and isinstance(content, dict)
        and content.get("key") == key
        and isinstance(content.get("images_checked"), int)
        and content["images_checked"] >= images
    )


def _write_manifest(manifest: Path, content: dict[str, Any]) -> None:
    """Write ``manifest`` atomically; an unwritable place costs the next start a full check, not this run."""
    try:
        write_text_atomic(manifest, json.dumps(content, indent=2))
    except OSError as exc:
        logger.warning(
            "%s: cannot write the checked-image manifest (%s); the next start checks again", manifest, exc
        )


def collate_detection(
    batch: Sequence[tuple[torch.Tensor, Target]],
) -> tuple[list[torch.Tensor], list[Target]]:
    """Keep variable-size images and targets as lists (torchvision detection models take lists)."""
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    return images, targets
