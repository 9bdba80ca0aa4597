"""Per-image storage of a COCO-format set: :class:`ImageRecord` and the flat-array :class:`PackedImages`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np


@dataclass
class ImageRecord:
    """One image and its validated boxes (``boxes``: ``(K, 4)`` float32 xyxy absolute pixels)."""

    image_id: int
    file_name: str
    width: int
    height: int
    boxes: np.ndarray
    category_ids: np.ndarray
    iscrowd: np.ndarray
    area: np.ndarray
    annotation_ids: np.ndarray


class PackedImages(Sequence[ImageRecord]):
    """The image records of a file held in a few flat numpy arrays: a sequence of :class:`ImageRecord`.

    A Python list of 118k records (COCO train2017) is 118k objects with their own arrays and strings; each
    access writes their reference counts, so every forked dataloader worker gradually copies the pages
    holding them (copy-on-read) until each holds its own copy of the list. Here the per-image fields and the
    per-box columns are flat arrays (file names: one UTF-8 buffer with end offsets, as detectron2's
    ``DatasetFromList(serialize=True)`` keeps its records), whose pages no access writes; ``self[i]`` builds
    the record of image ``i`` on the fly, its box arrays being views into the shared columns. Pickling it
    (spawned workers, DDP) copies the arrays, not one Python object per record.

    Args:
        image_ids: ``(N,)`` COCO image ids.
        file_names: ``N`` file names.
        sizes: ``(N, 2)`` ``[width, height]``, int64 (object when a size does not fit: the header check
            then refuses it naming the size).
        columns: the per-box arrays of :class:`ImageRecord` by field name (``boxes``, ``category_ids``,
            ``iscrowd``, ``area``, ``annotation_ids``); image ``i``'s at ``box_ends[i-1]:box_ends[i]``.
        box_ends: ``(N,)`` end offset of each image's boxes in ``columns``.
    """

    def __init__(
        self,
        image_ids: np.ndarray,
        file_names: Sequence[str],
        sizes: np.ndarray,
        columns: dict[str, np.ndarray],
        box_ends: np.ndarray,
    ) -> None:
        # surrogatepass: a JSON "\ud800" escape is a valid str with a lone surrogate; it must round-trip.
        encoded = [name.encode("utf-8", "surrogatepass") for name in file_names]
        name_ends = np.cumsum([len(name) for name in encoded], dtype=np.int64)
        names = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        self._set(np.asarray(image_ids, dtype=np.int64), names, name_ends, sizes, columns, box_ends)

    def _set(
        self,
        image_ids: np.ndarray,
        names: np.ndarray,
        name_ends: np.ndarray,
        sizes: np.ndarray,
        columns: dict[str, np.ndarray],
        box_ends: np.ndarray,
    ) -> None:
        self.image_ids = image_ids
        self._names, self._name_ends = names, np.asarray(name_ends, dtype=np.int64)
        self._sizes = sizes
        self._columns = columns
        self._box_ends = np.asarray(box_ends, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.image_ids)

    def _span(self, ends: np.ndarray, index: int) -> tuple[int, int]:
        return (int(ends[index - 1]) if index else 0), int(ends[index])

    @overload
    def __getitem__(self, index: int) -> ImageRecord: ...
    @overload
    def __getitem__(self, index: slice) -> PackedImages: ...
    def __getitem__(self, index: int | slice) -> ImageRecord | PackedImages:
        if isinstance(index, slice):
            return self._take(np.arange(len(self))[index])
        if not -len(self) <= index < len(self):
            raise IndexError(f"image index {index} out of range for {len(self)} images")
        index = int(index) % len(self)
        name_start, name_end = self._span(self._name_ends, index)
        box_start, box_end = self._span(self._box_ends, index)
        width, height = self._sizes[index].tolist()
        return ImageRecord(
            image_id=int(self.image_ids[index]),
            file_name=self._names[name_start:name_end].tobytes().decode("utf-8", "surrogatepass"),
            width=width,
            height=height,
            **{name: column[box_start:box_end] for name, column in self._columns.items()},
        )

    def __iter__(self) -> Iterator[ImageRecord]:
        return (self[index] for index in range(len(self)))

    def _take(self, indices: np.ndarray) -> PackedImages:
        """The records at ``indices`` (in that order), packed alike."""

        def gather(ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            starts = np.concatenate([[0], ends[:-1]])[indices]
            lengths = ends[indices] - starts
            new_ends = np.cumsum(lengths, dtype=np.int64)
            within = np.arange(int(new_ends[-1]) if len(new_ends) else 0) - np.repeat(
                new_ends - lengths, lengths
            )
            return np.repeat(starts, lengths) + within, new_ends

        name_index, name_ends = gather(self._name_ends)
        box_index, box_ends = gather(self._box_ends)
        taken = PackedImages.__new__(PackedImages)
        columns = {name: column[box_index] for name, column in self._columns.items()}
        taken._set(
            self.image_ids[indices],
            self._names[name_index],
            name_ends,
            self._sizes[indices],
            columns,
            box_ends,
        )
        return taken
