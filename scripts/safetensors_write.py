"""`write_shard`: a safetensors file from raw bytes (stdlib only), for the fixture and model
generators in this folder."""
import json
import struct


def write_shard(path, tensors):
    """Write `tensors` (`(name, dtype, shape, bytes)` in file order) as a safetensors file."""
    header, off = {}, 0
    for name, dt, shape, data in tensors:
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for *_, data in tensors:
            f.write(data)
