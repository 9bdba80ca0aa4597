"""One COCO-format data path for the embedded tree crowns and COCO 2017: dataset, collate, DataModule.

``CocoDetectionDataset`` returns ``(image, target)``:

- ``image``: float32 ``[3, H, W]`` in ``[0, 1]``, RGB, native resolution (resizing and normalisation belong
  to the model's own transform), decoded by the rules of :func:`decode_rgb` (below).
- ``target``: ``boxes`` float32 ``[K, 4]`` xyxy absolute pixels; ``labels`` int64 ``[K]`` contiguous
  ``0..C-1`` (the position of the COCO category id in the sorted id list, ``dataset.category_ids``);
  ``image_id`` int64 scalar (the COCO id); ``iscrowd`` int64 ``[K]``; ``area`` float32 ``[K]``.

Images without annotations are kept (they train with all anchors negative); their ``boxes`` is ``[0, 4]``.
Crowd boxes are kept with ``iscrowd=1``: the model ignores them in matching, the COCO metric uses them.
Validation rules and the ``box_policy`` are described in :mod:`ghmdet.data.annotations`.

Images (every mode Pillow opens is either served with its content or refused with one line naming the file
and its mode):

- EXIF orientation is applied (``ImageOps.exif_transpose``), as detectron2's ``read_image`` and OpenCV's
  ``imread`` (mmdetection) do: the image is served as a viewer displays it, and COCO's ``width``/``height``
  and boxes describe that displayed image. The displayed size must equal the record's size; a file whose
  record matches only its stored (unturned) pixels is refused: its boxes would land turned by 90 degrees.
- 8-bit modes ``1``, ``L``, ``P``, ``LA``, ``PA``, ``RGB``, ``RGBA``, ``RGBX``, ``CMYK``, ``YCbCr`` go through
  ``Image.convert("RGB")``: grayscale is replicated, a palette is looked up, CMYK is
  ``R = (255 - C)(255 - K) / 255`` (no colour profile), YCbCr is the JPEG (BT.601 full-range) transform.
  Alpha is dropped, not composited: the colour values are served as stored, as torchvision's
  ``decode_image(mode=RGB)`` and detectron2 serve them.
- Unsigned 16-bit grayscale (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``, and the ``I`` mode older Pillow
  opens a 16-bit PNG in): a value ``v`` of ``0..65535`` means the fraction ``v / 65535`` of full scale
  (PNG and TIFF store the full range whatever the sensor's bit count). It is served as its high byte
  ``v >> 8``, replicated to RGB. Pillow itself decodes 16-bit RGB(A) and gray+alpha files to their high
  bytes, so every 16-bit file is served by one rule (torchvision's ``to_dtype(uint16 -> uint8, scale=True)``
  is the same shift).
- Refused: 32-bit integer ``I`` and float ``F`` pixels (and signed 16-bit), whose range no file records, and
  modes without a defined RGB conversion (``LAB``, ``HSV``, ...). The check reads only file headers and runs
  at construction for every image served, so a refused mode, a size that does not match the annotation or
  an unreadable header fails before training starts.

Resumable, reproducible training order (``docs/reliability.md``): the train loader is a
:class:`ResumableDataLoader` over a :class:`ResumableRandomSampler`. The shuffling order of epoch ``e`` is a
function of ``(seed, e)`` alone, and the random augmentation of a sample is a function of
``(seed, e, index)`` alone (each sample's transforms run on a private RNG stream), so neither depends on how
many epochs ran in this process, on worker processes or on prefetching. The loader reports its position
(epoch, samples served) through ``state_dict()``; Lightning stores it in the checkpoint and a resumed run
continues with the very next sample, mid-epoch included.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence, Sized
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ghmdet.data.annotations import (
    BoxPolicy,
    CocoAnnotations,
    DatasetError,
    ImageRecord,
    check_image_files,
    load_coco_annotations,
    read_num_classes,
)
from ghmdet.data.samplers import eval_sampler
from ghmdet.data.transforms import Target, Transform, build_train_transforms

logger = logging.getLogger(__name__)

# Exceptions PIL raises for unreadable, truncated or hostile image files.
_IMAGE_READ_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)

#: A training sample key: (dataset index, seed of its augmentation RNG stream).
SampleKey = tuple[int, int]
_UINT64 = 2**64 - 1
# Spawn-key tags keeping the shuffling and the augmentation streams apart.
_PERMUTATION_STREAM, _AUGMENTATION_STREAM = 0, 1


def derive_seed(seed: int, *keys: int) -> int:
    """A 64-bit seed that is a pure function of ``seed`` and ``keys`` (NumPy ``SeedSequence`` mixing)."""
    sequence = np.random.SeedSequence(entropy=seed & _UINT64, spawn_key=tuple(int(k) for k in keys))
    return int(sequence.generate_state(1, dtype=np.uint64)[0])


@contextmanager
def private_torch_rng(seed: int) -> Iterator[None]:
    """Run the block on torch's CPU generator seeded with ``seed``, then put the caller's state back.

    Only the CPU generator is touched (``torch.manual_seed`` would also reseed every CUDA device), so code
    that draws from the global generator (the transforms) becomes a pure function of ``seed`` without
    disturbing the training process's own random stream.
    """
    generator = torch.default_generator
    saved = generator.get_state()
    generator.manual_seed(seed)
    try:
        yield
    finally:
        generator.set_state(saved)


# ----------------------------------------------------------------------------------------- images

#: Pillow modes served through ``Image.convert("RGB")`` (8-bit data with a fixed RGB meaning).
RGB_CONVERTIBLE_MODES = frozenset({"1", "L", "P", "LA", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"})
#: unsigned 16-bit grayscale modes (and raw modes), served as their high byte
SIXTEEN_BIT_GRAY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_EXIF_ORIENTATION = 0x0112
_ORIENTATIONS_SWAPPING_AXES = frozenset({5, 6, 7, 8})  # transpose, 90 and 270 degree turns


def _is_16_bit_gray(image: Image.Image) -> bool:
    """Whether an opened, not yet decoded image holds unsigned 16-bit grayscale pixels."""
    if image.mode in SIXTEEN_BIT_GRAY_MODES:
        return True
    if image.mode != "I" or not image.tile:
        return False
    # Older Pillow opens a 16-bit grayscale PNG as 32-bit "I", decoded from a 16-bit raw mode.
    rawmodes = [tile[3][0] if isinstance(tile[3], tuple) else tile[3] for tile in image.tile]
    return all(rawmode in SIXTEEN_BIT_GRAY_MODES for rawmode in rawmodes)


def image_mode_problem(image: Image.Image) -> str | None:
    """Why an opened (not yet decoded) image is refused, or None when its mode is served.

    Args:
        image: a file opened with ``Image.open`` (its pixels not loaded: the raw mode is read from it).

    Returns:
        ``"mode <mode> is refused: <why and what to do>"``, or None.
    """
    mode = image.mode
    if mode in RGB_CONVERTIBLE_MODES or _is_16_bit_gray(image):
        return None
    if mode in ("I", "F") or mode.startswith(("I;", "F;")):
        why = "32-bit integer, floating-point or signed pixels have no recorded range to map to 8 bits"
    else:
        why = "it has no defined conversion to RGB"
    advice = "store the image as 8-bit RGB or grayscale, or as unsigned 16-bit grayscale"
    return f"mode {mode} is refused: {why}; {advice}"


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8; 1 without a tag) of an opened image, read without decoding its pixels.

    A PNG's ``eXIf`` chunk after the pixel data is seen only once the image is decoded (asking Pillow for it
    earlier decodes the whole file); :func:`decode_rgb` applies it then and the size check runs again.
    """
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    value = image.getexif().get(_EXIF_ORIENTATION, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def displayed_size(stored_size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """``(width, height)`` of an image as displayed: EXIF orientations 5-8 turn it by 90 degrees."""
    width, height = stored_size
    return (height, width) if orientation in _ORIENTATIONS_SWAPPING_AXES else (width, height)


def decode_rgb(image: Image.Image) -> tuple[np.ndarray, int]:
    """Decode an opened image to ``[H, W, 3]`` uint8 RGB as displayed (the rules of the module docstring).

    Args:
        image: a file opened with ``Image.open`` whose mode passed :func:`image_mode_problem`; it is
            decoded and turned in place.

    Returns:
        The pixels with the EXIF orientation applied, and that orientation (1: none).
    """
    sixteen_bit = _is_16_bit_gray(image)  # before load(): the raw mode is gone afterwards
    image.load()  # decode now, so truncation surfaces here and not later in convert()
    orientation = exif_orientation(image)  # after load(): a PNG's late eXIf chunk is known now
    ImageOps.exif_transpose(image, in_place=True)
    if sixteen_bit:
        high_bytes = (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
        return np.repeat(high_bytes[:, :, None], 3, axis=2), orientation
    return np.array(image.convert("RGB"), dtype=np.uint8), orientation


def _size_problem(
    record: ImageRecord, ann_file: Path, stored_size: tuple[int, int], orientation: int
) -> str | None:
    """Why the image's displayed size does not fit its annotation record, or None."""
    width, height = displayed_size(stored_size, orientation)
    if (width, height) == (record.width, record.height):
        return None
    turned = orientation in _ORIENTATIONS_SWAPPING_AXES
    displayed = f"{width}x{height}" + (
        f" as displayed (EXIF orientation {orientation} turns its stored {stored_size[0]}x{stored_size[1]})"
        if turned
        else ""
    )
    problem = f"is {displayed} but {ann_file} says {record.width}x{record.height}"
    if turned and stored_size == (record.width, record.height):
        return (
            f"{problem}: the annotation describes the stored pixels, not the image as displayed; remove the "
            "EXIF orientation tag (or annotate the displayed image), or the boxes would land turned"
        )
    return f"{problem}; the boxes would not match"


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
    """

    def __init__(
        self,
        image_dir: str | os.PathLike[str],
        ann_file: str | os.PathLike[str],
        transforms: Transform | None = None,
        cache_images: bool = False,
        box_policy: BoxPolicy = "error",
        limit: int | None = None,
    ) -> None:
        self.image_dir = Path(image_dir)
        self.ann_file = Path(ann_file)
        if not self.image_dir.is_dir():
            raise DatasetError(f"image folder not found: {self.image_dir} (images of {self.ann_file})")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ValueError(f"limit must be a non-negative integer or None, got {limit!r}")
        annotations: CocoAnnotations = load_coco_annotations(self.ann_file, box_policy=box_policy)
        check_image_files(annotations, self.image_dir)
        self.records: list[ImageRecord] = annotations.images if limit is None else annotations.images[:limit]
        for record in self.records:
            self._check_header(record)
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
                    problem = _size_problem(record, self.ann_file, opened.size, exif_orientation(opened))
                    late_exif = opened.format == "PNG" and "exif" not in opened.info
        except _IMAGE_READ_ERRORS as exc:
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
                    problem = _size_problem(record, self.ann_file, stored_size, orientation)
                else:
                    problem = f"(listed in {self.ann_file}): {problem}"
        except _IMAGE_READ_ERRORS as exc:
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
        own RNG stream seeded with ``seed`` (what :class:`ResumableRandomSampler` yields)."""
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


def collate_detection(
    batch: Sequence[tuple[torch.Tensor, Target]],
) -> tuple[list[torch.Tensor], list[Target]]:
    """Keep variable-size images and targets as lists (torchvision detection models take lists)."""
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    return images, targets


def _process_group() -> tuple[int, int]:
    """``(world size, rank)`` of the initialised process group, ``(1, 0)`` without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


class ResumableRandomSampler(DistributedSampler):
    """Shuffles a dataset per epoch, reproducibly and resumably, sharded over ``num_replicas`` processes.

    Epoch ``e`` visits ``randperm(len(dataset))`` drawn from a generator seeded with
    ``derive_seed(seed, 0, e)`` (the same on every process), padded by repetition to a multiple of
    ``num_replicas`` as :class:`DistributedSampler` does; process ``rank`` takes the positions
    ``rank::num_replicas``.
    Each position ``p`` yields ``(index, derive_seed(seed, 1, e, p))``: the second item seeds that sample's
    augmentation (see :meth:`CocoDetectionDataset.__getitem__`). Lightning calls :meth:`set_epoch` at each
    epoch start. :meth:`resume_at` makes the next iteration of an epoch skip the samples already consumed.

    It is a :class:`DistributedSampler` so that Lightning keeps it under DDP instead of wrapping it (the
    wrapper would hide the position); with the defaults (one process) no process group is needed.
    """

    def __init__(self, dataset: Sized, seed: int = 0, num_replicas: int = 1, rank: int = 0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        super().__init__(
            dataset,  # type: ignore[arg-type]
            num_replicas=num_replicas,
            rank=rank,
            shuffle=True,
            seed=seed,
            drop_last=False,
        )
        self._skip = 0  # samples of `epoch` to skip at the next iteration (set by resume_at)
        #: (epoch, first position) of the iteration in progress; None before the first one.
        self.active: tuple[int, int] | None = None

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the next iteration (a pending resume offset survives only for its epoch)."""
        if epoch != self.epoch:
            self._skip = 0
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, consumed: int) -> None:
        """Continue epoch ``epoch`` after this process's first ``consumed`` samples (all: the next epoch)."""
        if consumed >= self.num_samples:
            epoch, consumed = epoch + 1, 0
        self.epoch, self._skip = int(epoch), max(int(consumed), 0)

    def positions(self, epoch: int) -> list[tuple[int, int]]:
        """This process's ``(position, index)`` pairs of ``epoch``, in visiting order."""
        size = len(self.dataset)  # type: ignore[arg-type]
        generator = torch.Generator().manual_seed(derive_seed(self.seed, _PERMUTATION_STREAM, epoch))
        order = torch.randperm(size, generator=generator).tolist()
        if size and self.total_size > size:  # pad as DistributedSampler does
            order += (order * math.ceil(self.total_size / size))[: self.total_size - size]
        return [(p, order[p]) for p in range(self.rank, self.total_size, self.num_replicas)]

    def order(self, epoch: int) -> list[int]:
        """This process's shuffled indices of ``epoch``."""
        return [index for _, index in self.positions(epoch)]

    def __iter__(self) -> Iterator[SampleKey]:  # type: ignore[override]
        epoch, start = self.epoch, self._skip
        self._skip = 0
        self.active = (epoch, start)
        for position, index in self.positions(epoch)[start:]:
            yield index, derive_seed(self.seed, _AUGMENTATION_STREAM, epoch, position)


class ResumableDataLoader(DataLoader):
    """A :class:`DataLoader` over a :class:`ResumableRandomSampler` that checkpoints its position.

    It counts the batches it has handed out in the current epoch; ``state_dict()`` turns that into
    ``{"epoch", "consumed"}`` samples, and ``load_state_dict()`` makes the next iteration continue there.
    Lightning saves and restores this state with the loop state (its ``_Stateful`` protocol). The count is
    taken where batches leave the loader, so worker processes and their prefetching do not shift it.
    """

    def __init__(self, dataset: Dataset[Any], sampler: ResumableRandomSampler, **kwargs: Any) -> None:
        super().__init__(dataset, sampler=sampler, **kwargs)
        self._served = 0

    @property
    def resumable_sampler(self) -> ResumableRandomSampler:
        """The sampler whose epoch and offset the state describes."""
        if not isinstance(self.sampler, ResumableRandomSampler):
            raise TypeError(f"ResumableDataLoader needs a ResumableRandomSampler, got {type(self.sampler)}")
        return self.sampler

    def __iter__(self) -> Iterator[Any]:
        self._served = 0
        return self._counted(super().__iter__())

    def _counted(self, batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            self._served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """Position: ``{"epoch": e, "consumed": samples of e this process handed out, ...sizes}``."""
        sampler = self.resumable_sampler
        if sampler.active is None:  # nothing drawn yet in this process
            epoch, consumed = sampler.epoch, sampler._skip
        else:
            epoch, start = sampler.active
            consumed = min(start + self._served * int(self.batch_size or 1), len(sampler))
        return {
            "epoch": epoch,
            "consumed": consumed,
            "dataset_size": len(self.dataset),  # type: ignore[arg-type]
            "num_replicas": sampler.num_replicas,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a :meth:`state_dict` (same training data; a changed process count is mapped)."""
        sampler = self.resumable_sampler
        size = len(self.dataset)  # type: ignore[arg-type]
        if int(state.get("dataset_size", size)) != size:
            raise ValueError(
                f"the checkpointed train loader had {state['dataset_size']} images, this one has {size}: "
                "the training data changed, so the position in the epoch cannot be restored"
            )
        consumed = int(state["consumed"])
        replicas = int(state.get("num_replicas", sampler.num_replicas))
        if replicas != sampler.num_replicas:
            consumed = consumed * replicas // sampler.num_replicas
            logger.warning(
                "resuming on %d processes from a checkpoint of %d: the position in epoch %d is approximate",
                sampler.num_replicas,
                replicas,
                state["epoch"],
            )
        sampler.resume_at(int(state["epoch"]), consumed)
        self._served = 0


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
            replicas, rank = _process_group()
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
