"""Streaming reads and writes of ``.safetensors`` files, one tensor at a time, with numpy.

The format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length N,
N bytes of JSON ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {..}}``,
then the raw little-endian tensor bytes (offsets relative to the end of the header). A sharded
checkpoint adds ``model.safetensors.index.json`` with ``{"weight_map": {name: file}}``.

Reading maps one tensor at a time (``np.memmap`` of exactly its bytes), so a 7B import holds at
most one source tensor in host memory; bfloat16 and float8 come from ``ml_dtypes`` (numpy has
neither, which is why this reads the format itself rather than through
``safetensors.safe_open(framework="np")``).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import struct
from typing import Callable, Mapping

import ml_dtypes
import numpy as np

DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2), "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32), "I16": np.dtype(np.int16), "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
_NAMES = {dt: name for name, dt in DTYPES.items()}
INDEX_FILE = "model.safetensors.index.json"


@dataclasses.dataclass(frozen=True)
class TensorInfo:
  """Where one tensor lives: file, absolute byte offset, dtype and shape."""

  path: str
  offset: int
  dtype: np.dtype
  shape: tuple[int, ...]


def read_header(path: str) -> tuple[dict[str, TensorInfo], dict[str, str]]:
  """Parses one file's header.

  Returns:
    ``({name: TensorInfo}, metadata)``.

  Raises:
    ValueError: a truncated or corrupt file, naming the file and the tensor.
  """
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    raw = f.read(8)
    if len(raw) != 8:
      raise ValueError(f"{path}: not a safetensors file (shorter than its 8-byte header size).")
    (n,) = struct.unpack("<Q", raw)
    if n > size - 8:
      raise ValueError(f"{path}: not a safetensors file (header size {n} > file size {size}).")
    try:
      header = json.loads(f.read(n))
    except ValueError as e:
      raise ValueError(f"{path}: corrupt safetensors header ({e}).") from None
  metadata = header.pop("__metadata__", None) or {}
  tensors = {}
  for name, entry in header.items():
    if entry.get("dtype") not in DTYPES:
      raise ValueError(f"{path}: tensor {name!r} has dtype {entry.get('dtype')!r}; supported: "
                       f"{sorted(DTYPES)}.")
    dtype, shape = DTYPES[entry["dtype"]], tuple(int(s) for s in entry["shape"])
    begin, end = entry["data_offsets"]
    if end - begin != int(np.prod(shape)) * dtype.itemsize or 8 + n + end > size:
      raise ValueError(f"{path}: tensor {name!r} ({entry['dtype']}{list(shape)}) has byte range "
                       f"{begin}..{end}, inconsistent with its shape or the file size {size}.")
    tensors[name] = TensorInfo(path, 8 + n + begin, dtype, shape)
  return tensors, metadata


class SafetensorsReader:
  """The tensors of one ``.safetensors`` file, a sharded index, or a directory of them."""

  def __init__(self, path: str):
    """``path``: a ``.safetensors`` file, an ``*.index.json``, or a directory holding either."""
    if os.path.isdir(path):
      index = os.path.join(path, INDEX_FILE)
      files = [index] if os.path.exists(index) else sorted(
          glob.glob(os.path.join(path, "*.safetensors")))
      if not files:
        raise ValueError(f"{path}: no *.safetensors file and no {INDEX_FILE} in this directory.")
    else:
      files = [path]
    if files[0].endswith(".json"):
      with open(files[0]) as f:
        weight_map = json.load(f)["weight_map"]
      base = os.path.dirname(files[0])
      files = sorted({os.path.join(base, v) for v in weight_map.values()})
    self.files = files
    self.tensors: dict[str, TensorInfo] = {}
    self.metadata: dict[str, str] = {}
    for file in files:
      tensors, metadata = read_header(file)
      for name in tensors:
        if name in self.tensors:
          raise ValueError(f"tensor {name!r} appears in both {self.tensors[name].path} and "
                           f"{file}.")
      self.tensors.update(tensors)
      self.metadata.update(metadata)

  def keys(self) -> list[str]:
    return list(self.tensors)

  def spec(self, name: str) -> tuple[tuple[int, ...], np.dtype]:
    info = self.tensors[name]
    return info.shape, info.dtype

  def read(self, name: str) -> np.ndarray:
    """A read-only memory map of one tensor (pages are read on access, freed when dropped)."""
    info = self.tensors[name]
    if not info.shape or 0 in info.shape:
      return np.zeros(info.shape, info.dtype)
    return np.memmap(info.path, dtype=info.dtype, mode="r", offset=info.offset, shape=info.shape)


def save_file_streamed(
    path: str,
    specs: Mapping[str, tuple[tuple[int, ...], np.dtype]],
    make: Callable[[str], np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> None:
  """Writes tensors one at a time: ``make(name)`` is called once per name, in ``specs`` order.

  Only one tensor is in memory at a time, so a multi-GB file is written in bounded memory.
  """
  header: dict = {"__metadata__": dict(metadata)} if metadata else {}
  offset = 0
  for name, (shape, dtype) in specs.items():
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    header[name] = {"dtype": _NAMES[np.dtype(dtype)], "shape": list(shape),
                    "data_offsets": [offset, offset + nbytes]}
    offset += nbytes
  raw = json.dumps(header, separators=(",", ":")).encode()
  raw += b" " * (-len(raw) % 8)  # Tensor data starts 8-byte aligned, as the reference writer.
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(raw)) + raw)
    for name, (shape, dtype) in specs.items():
      array = np.ascontiguousarray(make(name), dtype=dtype)
      if array.shape != tuple(shape):
        raise ValueError(f"make({name!r}) returned shape {array.shape}, declared {tuple(shape)}.")
      f.write(array.reshape(-1).view(np.uint8).data)  # No extra copy of the bytes.


def save_file(path: str, tensors: Mapping[str, np.ndarray],
              metadata: Mapping[str, str] | None = None) -> None:
  """Writes a dict of numpy arrays (small checkpoints and tests)."""
  specs = {k: (np.shape(v), np.asarray(v).dtype) for k, v in tensors.items()}
  save_file_streamed(path, specs, lambda k: np.asarray(tensors[k]), metadata)

