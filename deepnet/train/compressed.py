"""The compressed weight formats a run directory may hold instead of ``model.safetensors``.

``deepnet compress`` writes them; :func:`deepnet.train.run.load_run` reads them, so that
``deepnet evaluate`` (and every other step that loads a run) needs no extra step. They live
in the run layer because the verbs below ``compress`` must read them without importing it.

``model.json`` names the format under ``weights``:

- ``{"format": "deepnet-compressed", "file": "model.compressed"}``: Deep Compression's
  storage (Han et al. 2016). Each tensor of the state dict, in order, as: the positions of its
  nonzero entries (relative gaps, Huffman-coded, or nothing when stored dense), and its values
  (codebook indices, Huffman-coded, against a per-tensor codebook of at most 256 fp16/fp32
  entries; or the raw fp16/fp32 values). Shapes and names come from the model that
  ``model.json`` rebuilds, so the file holds only numbers. A CRC-32 closes the file.
- ``{"format": "onnx-int8", "file": "model.int8.onnx"}``: an int8 ONNX graph of the model
  (preprocessed inputs in, logits out), run by ONNX Runtime.

Reading never executes code from the file: it is parsed as integers and floats.
"""

from __future__ import annotations

import heapq
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["COMPRESSED_FORMAT", "CompressedFileError", "ONNX_INT8_FORMAT", "OnnxClassifier",
           "decode_state", "encode_state", "read_compressed", "write_compressed"]

COMPRESSED_FORMAT = "deepnet-compressed"
ONNX_INT8_FORMAT = "onnx-int8"
MAGIC = b"DNCZ"
VERSION = 1
MAX_CODE_LENGTH = 15  # code lengths are stored in 4 bits
MAX_CODEBOOK = 256
GAP_ALPHABETS = (4, 8, 16, 32, 64, 128, 256)

# Flags of one tensor record.
SPARSE, CODEBOOK, HALF, INT64 = 1, 2, 4, 8


class CompressedFileError(ValueError):
    """A compressed model file is truncated, corrupt or does not fit the model."""


# ------------------------------------------------------------------------------- Huffman


def huffman_lengths(counts: np.ndarray) -> np.ndarray:
    """Code length per symbol (0 for symbols that never occur), at most MAX_CODE_LENGTH bits."""
    counts = np.asarray(counts, dtype=np.int64)
    while True:
        used = [int(s) for s in np.flatnonzero(counts)]
        lengths = np.zeros(len(counts), dtype=np.int64)
        if len(used) == 1:
            lengths[used[0]] = 1
            return lengths
        heap = [(int(counts[s]), i, [s]) for i, s in enumerate(used)]
        heapq.heapify(heap)
        tie = len(heap)
        while len(heap) > 1:
            c1, _, s1 = heapq.heappop(heap)
            c2, _, s2 = heapq.heappop(heap)
            lengths[s1 + s2] += 1
            heapq.heappush(heap, (c1 + c2, tie, s1 + s2))
            tie += 1
        if lengths.max(initial=0) <= MAX_CODE_LENGTH:
            return lengths
        counts = np.where(counts > 0, (counts + 1) // 2, 0)  # flatten the distribution and retry


def _canonical_codes(lengths: np.ndarray) -> np.ndarray:
    codes = np.zeros(len(lengths), dtype=np.int64)
    code, previous = 0, 0
    for symbol in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[symbol]) - previous
        codes[symbol] = code
        code += 1
        previous = int(lengths[symbol])
    return codes


def huffman_encode(symbols: np.ndarray, lengths: np.ndarray) -> bytes:
    codes = _canonical_codes(lengths)
    code, length = codes[symbols], lengths[symbols]  # (N,) each
    shifts = length[:, None] - 1 - np.arange(MAX_CODE_LENGTH)[None, :]  # (N, 15): bit k of each code
    bits = (code[:, None] >> np.maximum(shifts, 0)) & 1
    return np.packbits(bits[shifts >= 0].astype(np.uint8)).tobytes()


def huffman_decode(data: bytes, lengths: np.ndarray, count: int) -> np.ndarray:
    """``count`` symbols from ``data``: one table look-up per symbol on a 15-bit window."""
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    codes = _canonical_codes(lengths)
    table_symbol = np.full(1 << MAX_CODE_LENGTH, -1, dtype=np.int64)
    table_length = np.zeros(1 << MAX_CODE_LENGTH, dtype=np.int64)
    for symbol in np.flatnonzero(lengths):
        shift = MAX_CODE_LENGTH - int(lengths[symbol])
        start = int(codes[symbol]) << shift
        if start + (1 << shift) > len(table_symbol):
            raise CompressedFileError("a Huffman table in the file is not a valid prefix code")
        table_symbol[start : start + (1 << shift)] = symbol
        table_length[start : start + (1 << shift)] = lengths[symbol]
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8)).astype(np.int64)
    total = len(bits)
    bits = np.concatenate([bits, np.zeros(MAX_CODE_LENGTH, dtype=np.int64)])
    windows = np.zeros(total + 1, dtype=np.int64)
    for k in range(MAX_CODE_LENGTH):
        windows = (windows << 1) | bits[k : k + total + 1]
    symbol_at = table_symbol[windows].tolist()
    length_at = table_length[windows].tolist()
    out = [0] * count
    position = 0
    for i in range(count):
        if position >= total or symbol_at[position] < 0:
            raise CompressedFileError("a Huffman stream in the file ends early or holds an invalid code")
        out[i] = symbol_at[position]
        position += length_at[position]
    if position > total:
        raise CompressedFileError("a Huffman stream in the file ends early")
    return np.asarray(out, dtype=np.int64)


def _pack_lengths(lengths: np.ndarray) -> bytes:
    padded = np.concatenate([lengths, np.zeros(len(lengths) % 2, dtype=np.int64)]).astype(np.uint8)
    return (padded[0::2] << 4 | padded[1::2]).astype(np.uint8).tobytes()


def _coded(symbols: np.ndarray, alphabet: int) -> bytes:
    """A Huffman-coded stream with its table: lengths (4 bits each), byte count, bits."""
    lengths = huffman_lengths(np.bincount(symbols, minlength=alphabet)) if len(symbols) else np.zeros(alphabet, np.int64)
    stream = huffman_encode(symbols, lengths) if len(symbols) else b""
    return _pack_lengths(lengths) + struct.pack("<I", len(stream)) + stream


# ----------------------------------------------------------------------------- writing


def _gap_symbols(positions: np.ndarray, alphabet: int) -> np.ndarray:
    """Relative positions as symbols: ``g < alphabet-1`` skips g zeros then holds a value;
    ``alphabet-1`` skips ``alphabet-1`` zeros and holds none (Han et al.'s padding)."""
    gaps = np.diff(positions, prepend=-1) - 1
    escapes, rest = np.divmod(gaps, alphabet - 1)
    symbols = np.full(int(escapes.sum()) + len(gaps), alphabet - 1, dtype=np.int64)
    ends = np.cumsum(escapes + 1) - 1  # where each value's own symbol lands
    symbols[ends] = rest
    return symbols


def _encode_values(values: np.ndarray) -> tuple[int, bytes]:
    """(flags, bytes) of float values: a codebook and Huffman-coded indices when they take at
    most 256 distinct values, else the raw values; fp16 when every value is exact in fp16."""
    half = bool(np.array_equal(values.astype(np.float16).astype(np.float32), values))
    dtype = np.float16 if half else np.float32
    flags = HALF if half else 0
    raw = values.astype(dtype).tobytes()
    codebook, indices = np.unique(values, return_inverse=True)
    if 0 < len(codebook) <= MAX_CODEBOOK:
        shared = (struct.pack("<H", len(codebook)) + codebook.astype(dtype).tobytes()
                  + _coded(indices.astype(np.int64), len(codebook)))
        if len(shared) < len(raw):
            return flags | CODEBOOK, shared
    return flags, raw


def encode_tensor(tensor: torch.Tensor) -> bytes:
    """One tensor's record: the smaller of its dense and its sparse encoding."""
    if not tensor.is_floating_point():
        return struct.pack("<B", INT64) + tensor.to(torch.int64).numpy().tobytes()
    values = tensor.detach().float().flatten().numpy()
    flags, body = _encode_values(values)
    best = struct.pack("<B", flags) + body
    positions = np.flatnonzero(values)
    if len(positions) < len(values):
        flags, body = _encode_values(values[positions])
        for alphabet in GAP_ALPHABETS:
            symbols = _gap_symbols(positions, alphabet)
            record = (struct.pack("<BIHI", flags | SPARSE, len(positions), alphabet, len(symbols))
                      + _coded(symbols, alphabet) + body)
            if len(record) < len(best):
                best = record
    return best


def encode_state(state: dict[str, torch.Tensor]) -> bytes:
    """The whole file: magic, version, tensor count, one record per tensor in order, CRC-32."""
    # Sorted by name: a module's parameter order can change (a removed parametrization
    # re-registers its tensor last) while the names and shapes stay.
    records = [encode_tensor(state[name].cpu()) for name in sorted(state)]
    body = MAGIC + struct.pack("<BH", VERSION, len(state)) + b"".join(records)
    return body + struct.pack("<I", zlib.crc32(body))


def write_compressed(model: nn.Module, path: Path) -> int:
    """Write ``model``'s state dict to ``path``; returns the file's size in bytes."""
    from deepnet.train.run import atomic_write

    data = encode_state(model.state_dict())
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    return len(data)


# ----------------------------------------------------------------------------- reading


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.offset = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.offset + n > len(self.data):
            raise CompressedFileError("the file ends in the middle of a tensor")
        chunk = self.data[self.offset : self.offset + n]
        self.offset += n
        return chunk

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def lengths(self, alphabet: int) -> np.ndarray:
        packed = np.frombuffer(self.take((alphabet + 1) // 2), dtype=np.uint8)
        return np.stack([packed >> 4, packed & 15], axis=1).reshape(-1)[:alphabet].astype(np.int64)

    def coded(self, alphabet: int, count: int) -> np.ndarray:
        lengths = self.lengths(alphabet)
        (size,) = self.unpack("<I")
        symbols = huffman_decode(self.take(size), lengths, count)
        if len(symbols) and symbols.max() >= alphabet:
            raise CompressedFileError("a coded symbol lies outside its alphabet")
        return symbols

    def values(self, flags: int, count: int) -> np.ndarray:
        dtype = np.float16 if flags & HALF else np.float32
        if flags & CODEBOOK:
            (size,) = self.unpack("<H")
            codebook = np.frombuffer(self.take(size * np.dtype(dtype).itemsize), dtype=dtype).astype(np.float32)
            return codebook[self.coded(size, count)]
        return np.frombuffer(self.take(count * np.dtype(dtype).itemsize), dtype=dtype).astype(np.float32)


def _decode_tensor(reader: _Reader, like: torch.Tensor) -> torch.Tensor:
    (flags,) = reader.unpack("<B")
    numel = like.numel()
    if flags & INT64:
        array = np.frombuffer(reader.take(8 * numel), dtype=np.int64).copy()
        return torch.from_numpy(array).reshape(like.shape).to(like.dtype)
    if flags & SPARSE:
        count, alphabet, n_symbols = reader.unpack("<IHI")
        if alphabet < 2 or count > numel:
            raise CompressedFileError("a sparse tensor record has an impossible header")
        symbols = reader.coded(alphabet, n_symbols)
        steps = np.where(symbols == alphabet - 1, alphabet - 1, symbols + 1)
        ends = np.cumsum(steps) - 1
        positions = ends[symbols != alphabet - 1]
        if len(positions) != count or (count and positions[-1] >= numel):
            raise CompressedFileError("a sparse tensor's positions do not fit its shape")
        dense = np.zeros(numel, dtype=np.float32)
        dense[positions] = reader.values(flags, count)
    else:
        dense = reader.values(flags, numel).copy()
    return torch.from_numpy(dense).reshape(like.shape).to(like.dtype)


def decode_state(data: bytes, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict stored in ``data``, for a model whose state dict is ``like`` (names, shapes)."""
    if len(data) < 11 or data[:4] != MAGIC:
        raise CompressedFileError("it is not a deepnet compressed model file (wrong magic bytes)")
    if struct.unpack("<I", data[-4:])[0] != zlib.crc32(data[:-4]):
        raise CompressedFileError("its checksum does not match: the file is corrupt or truncated")
    reader = _Reader(data[:-4])
    reader.take(4)
    version, count = reader.unpack("<BH")
    if version != VERSION:
        raise CompressedFileError(f"it has format version {version}; this deepnet reads version {VERSION}")
    if count != len(like):
        raise CompressedFileError(f"it holds {count} tensors but the model has {len(like)}")
    state = {name: _decode_tensor(reader, like[name]) for name in sorted(like)}
    if reader.offset != len(reader.data):
        raise CompressedFileError("it holds bytes after the last tensor")
    return state


def read_compressed(model: nn.Module, path: Path) -> None:
    """Load the compressed file ``path`` into ``model`` (built from the run's model.json)."""
    from deepnet.train.run import RunError

    try:
        state = decode_state(path.read_bytes(), model.state_dict())
    except CompressedFileError as err:
        raise RunError(f"{path} cannot be read: {err}. Compress the parent run again.") from None
    model.load_state_dict(state)


# ---------------------------------------------------------------------------- int8 ONNX


class OnnxClassifier(nn.Module):
    """An ONNX classifier run by ONNX Runtime behind a module's call: ``forward(x)`` with the
    preprocessed ``x`` ``(B, *input_shape)`` returns logits ``(B, num_classes)`` on the CPU.
    No parameters: it is for inference only."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(None, {self.input_name: x.detach().cpu().float().contiguous().numpy()})[:1]
        return torch.from_numpy(logits)


def load_onnx_int8(path: Path, threads: int = 1) -> OnnxClassifier:
    from deepnet.train.run import RunError

    try:
        return OnnxClassifier(path, threads)
    except Exception as err:  # onnxruntime raises its own error types
        first_line = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise RunError(f"{path} is not a readable ONNX model ({first_line}). Compress the parent run again.") from None
