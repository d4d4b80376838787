# Minimal safetensors with numpy: u64 LE header length, JSON header (padded with spaces to a
# multiple of 8), raw little-endian data. No external safetensors package.
import json, struct
import numpy as np

DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
          "I32": np.int32, "U8": np.uint8}  # BF16 is read-only and widened to F32
NAMES = {np.dtype(t): n for n, t in DTYPES.items()}

def read(path):
    """Returns ({name: np.ndarray}, {key: str}) in file order; BF16 comes back as F32."""
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    assert 8 + n <= len(buf), f"{path}: header length {n} past the end of the file"
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    data = memoryview(buf)[8 + n:]
    out = {}
    for name, t in header.items():
        b, e = t["data_offsets"]
        assert 0 <= b <= e <= len(data), f"{path}: tensor {name}: offsets outside the data"
        raw = data[b:e]
        if t["dtype"] == "BF16":
            a = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(raw, np.dtype(DTYPES[t["dtype"]]).newbyteorder("<"))
        out[name] = a.reshape(t["shape"]).astype(a.dtype.newbyteorder("="))
    return out, meta

def write(path, tensors, meta=None):
    """tensors: {name: np.ndarray} (order kept); meta: {key: str}."""
    header, blobs, off = {}, [], 0
    if meta:
        header["__metadata__"] = {k: str(v) for k, v in meta.items()}
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        dt = NAMES[a.dtype]
        raw = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for raw in blobs:
            f.write(raw)
