//! safetensors files, read lazily and written as a stream.
//!
//! A file is `u64 LE header length N`, `N` bytes of JSON (`{"name": {"dtype", "shape",
//! "data_offsets": [begin, end]}, ..., "__metadata__": {..}}`), then the data buffer; offsets
//! are relative to the buffer. [`SafetensorsFile::open`] reads only the header and checks every
//! entry against the file length before anything else happens: known dtype, `shape` product
//! times dtype size equal to the byte range (with overflow checks), ranges that tile the buffer
//! exactly (no gap, no overlap, nothing past the end: a truncated file fails here).
//! [`SafetensorsFile::read`] then reads one tensor into a buffer of exactly its size.

use crate::error::{Error, FormatError, KernelError, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Largest header accepted (the safetensors library's own limit).
pub const MAX_HEADER_BYTES: u64 = 100 << 20;

/// Element types of safetensors tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum Dtype {
    Bool,
    U8,
    I8,
    F8E4M3,
    F8E5M2,
    I16,
    U16,
    F16,
    Bf16,
    I32,
    U32,
    F32,
    I64,
    U64,
    F64,
}

impl Dtype {
    /// The dtype's name in a safetensors header (`"F16"`, `"I32"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Bool => "BOOL",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::F8E4M3 => "F8_E4M3",
            Dtype::F8E5M2 => "F8_E5M2",
            Dtype::I16 => "I16",
            Dtype::U16 => "U16",
            Dtype::F16 => "F16",
            Dtype::Bf16 => "BF16",
            Dtype::I32 => "I32",
            Dtype::U32 => "U32",
            Dtype::F32 => "F32",
            Dtype::I64 => "I64",
            Dtype::U64 => "U64",
            Dtype::F64 => "F64",
        }
    }

    /// The dtype of a header name, `None` for names this crate does not know.
    ///
    /// ```
    /// use quant_kernels::io::Dtype;
    /// assert_eq!(Dtype::from_name("BF16"), Some(Dtype::Bf16));
    /// assert_eq!(Dtype::from_name("F4"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<Self> {
        const ALL: [Dtype; 15] = [
            Dtype::Bool,
            Dtype::U8,
            Dtype::I8,
            Dtype::F8E4M3,
            Dtype::F8E5M2,
            Dtype::I16,
            Dtype::U16,
            Dtype::F16,
            Dtype::Bf16,
            Dtype::I32,
            Dtype::U32,
            Dtype::F32,
            Dtype::I64,
            Dtype::U64,
            Dtype::F64,
        ];
        ALL.into_iter().find(|d| d.name() == name)
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 | Dtype::F8E4M3 | Dtype::F8E5M2 => 1,
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::Bf16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::I64 | Dtype::U64 | Dtype::F64 => 8,
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor's entry in a header, checked against the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Element type.
    pub dtype: Dtype,
    /// Shape (row-major).
    pub shape: Vec<usize>,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    /// Byte length of the data (`shape` product times `dtype.size()`).
    pub len: usize,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.len / self.dtype.size()
    }
}

/// A safetensors file whose header has been read and validated; tensors are read on demand.
#[derive(Debug, Clone)]
pub struct SafetensorsFile {
    path: PathBuf,
    tensors: BTreeMap<String, TensorInfo>,
    metadata: BTreeMap<String, String>,
}

fn malformed(path: &str, reason: impl Into<String>) -> Error {
    Error::Format(FormatError::Safetensors { path: path.to_string(), reason: reason.into() })
}

/// Parse and validate a header (`header` = the JSON bytes) for a file of `file_len` bytes.
/// Pure: the fuzz target calls it on arbitrary bytes.
pub fn parse_header(
    path: &str,
    header: &[u8],
    file_len: u64,
) -> Result<(BTreeMap<String, TensorInfo>, BTreeMap<String, String>)> {
    let data_start = 8 + header.len() as u64;
    let data_len = file_len
        .checked_sub(data_start)
        .ok_or_else(|| malformed(path, format!("file of {file_len} bytes is shorter than its header")))?;
    let json: serde_json::Value =
        serde_json::from_slice(header).map_err(|e| malformed(path, format!("header is not JSON: {e}")))?;
    let serde_json::Value::Object(entries) = json else {
        return Err(malformed(path, "header is not a JSON object"));
    };
    let mut tensors = BTreeMap::new();
    let mut metadata = BTreeMap::new();
    let mut ranges = Vec::with_capacity(entries.len());
    for (name, entry) in entries {
        if name == "__metadata__" {
            let serde_json::Value::Object(m) = entry else {
                return Err(malformed(path, "__metadata__ is not an object"));
            };
            for (k, v) in m {
                let serde_json::Value::String(v) = v else {
                    return Err(malformed(path, format!("__metadata__.{k} is not a string")));
                };
                metadata.insert(k, v);
            }
            continue;
        }
        let bad = |what: &str| malformed(path, format!("tensor `{name}`: {what}"));
        let dtype_name = entry.get("dtype").and_then(|d| d.as_str()).ok_or_else(|| bad("no dtype"))?;
        let dtype =
            Dtype::from_name(dtype_name).ok_or_else(|| bad(&format!("unsupported dtype {dtype_name}")))?;
        let shape = entry
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad("no shape"))?
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| bad("shape is not a list of sizes"))?;
        let offsets = entry
            .get("data_offsets")
            .and_then(|o| o.as_array())
            .filter(|o| o.len() == 2)
            .and_then(|o| Some((o[0].as_u64()?, o[1].as_u64()?)))
            .ok_or_else(|| bad("data_offsets is not [begin, end]"))?;
        let (begin, end) = offsets;
        if begin > end || end > data_len {
            return Err(bad(&format!("data_offsets [{begin}, {end}] outside the {data_len}-byte data")));
        }
        let len = shape
            .iter()
            .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad("shape overflows"))?;
        if len as u64 != end - begin {
            return Err(bad(&format!(
                "shape {shape:?} of {dtype} needs {len} bytes, offsets give {}",
                end - begin
            )));
        }
        ranges.push((begin, end));
        tensors.insert(name, TensorInfo { dtype, shape, offset: data_start + begin, len });
    }
    ranges.sort_unstable();
    let mut at = 0;
    for (begin, end) in ranges {
        if begin != at {
            return Err(malformed(path, format!("data ranges leave a gap or overlap at byte {at}")));
        }
        at = end;
    }
    if at != data_len {
        return Err(malformed(path, format!("tensors cover {at} of the {data_len} data bytes")));
    }
    Ok((tensors, metadata))
}

impl SafetensorsFile {
    /// Open `path` and validate its header; no tensor data is read.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let label = path.display().to_string();
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut n = [0u8; 8];
        file.read_exact(&mut n).map_err(|_| malformed(&label, "shorter than the 8-byte header length"))?;
        let n = u64::from_le_bytes(n);
        if n > MAX_HEADER_BYTES || n > file_len - 8 {
            return Err(malformed(
                &label,
                format!("header length {n} exceeds the file or {MAX_HEADER_BYTES}"),
            ));
        }
        let mut header = vec![0u8; n as usize];
        file.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
        let (tensors, metadata) = parse_header(&label, &header, file_len)?;
        Ok(Self { path: path.to_path_buf(), tensors, metadata })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor, by name.
    pub fn tensors(&self) -> &BTreeMap<String, TensorInfo> {
        &self.tensors
    }

    /// The `__metadata__` strings.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// One tensor's entry.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }

    /// Read one tensor's bytes (exactly its validated length).
    pub fn read(&self, name: &str) -> Result<Vec<u8>> {
        let info = self
            .info(name)
            .ok_or_else(|| Error::Format(FormatError::MissingTensors(vec![name.to_string()])))?;
        let mut file = File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
        file.seek(SeekFrom::Start(info.offset)).map_err(|e| Error::io(&self.path, e))?;
        let mut bytes = vec![0u8; info.len];
        // The file may have shrunk since it was opened: that is an I/O error, not a panic.
        file.read_exact(&mut bytes).map_err(|e| Error::io(&self.path, e))?;
        Ok(bytes)
    }

    /// Read rows `rows`, columns `cols` of a tensor seen as `[rows, last dimension]` (a 1-D
    /// tensor is one row; a scalar one row of one), row after row: one read when the columns
    /// are whole rows, else one per row, so only the region's bytes are read. Returns the
    /// region's bytes and the bytes read.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("qk-region-doc-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// # let path = dir.join("t.safetensors");
    /// use quant_kernels::io::{Dtype, SafetensorsFile, SafetensorsWriter};
    /// let decl = [("t".to_string(), Dtype::U8, vec![3, 4])];
    /// let mut w = SafetensorsWriter::create(&path, &decl, &Default::default())?;
    /// w.write("t", &[0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23])?;
    /// w.finish()?;
    /// let f = SafetensorsFile::open(&path)?;
    /// assert_eq!(f.read_region("t", 1..3, 1..3)?, vec![11, 12, 21, 22]);
    /// assert!(f.read_region("t", 0..4, 0..1).is_err()); // only 3 rows
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), quant_kernels::Error>(())
    /// ```
    pub fn read_region(&self, name: &str, rows: Range<usize>, cols: Range<usize>) -> Result<Vec<u8>> {
        let esize = self.info(name).map_or(1, |i| i.dtype.size());
        let mut out = vec![0u8; rows.len().saturating_mul(cols.len()).saturating_mul(esize)];
        self.read_region_into(name, rows, cols, &mut out)?;
        Ok(out)
    }

    /// [`SafetensorsFile::read_region`] into `out`, which must hold exactly the region's bytes.
    pub fn read_region_into(
        &self,
        name: &str,
        rows: Range<usize>,
        cols: Range<usize>,
        out: &mut [u8],
    ) -> Result<()> {
        let info = self
            .info(name)
            .ok_or_else(|| Error::Format(FormatError::MissingTensors(vec![name.to_string()])))?;
        let width = info.shape.last().copied().unwrap_or(1);
        let height = info.numel().checked_div(width).unwrap_or(0);
        if rows.start > rows.end || rows.end > height || cols.start > cols.end || cols.end > width {
            return Err(Error::Format(FormatError::TensorRegion {
                tensor: name.to_string(),
                rows,
                cols,
                shape: info.shape.clone(),
            }));
        }
        let esize = info.dtype.size();
        let (row_bytes, take) = (width * esize, cols.len() * esize);
        crate::error::expect_len("region bytes", rows.len() * take, out.len())?;
        if out.is_empty() {
            return Ok(());
        }
        let mut file = File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
        let at = |r: usize| info.offset + (r * row_bytes + cols.start * esize) as u64;
        if take == row_bytes {
            file.seek(SeekFrom::Start(at(rows.start))).map_err(|e| Error::io(&self.path, e))?;
            file.read_exact(out).map_err(|e| Error::io(&self.path, e))?;
        } else {
            for (r, dst) in rows.zip(out.chunks_exact_mut(take)) {
                file.seek(SeekFrom::Start(at(r))).map_err(|e| Error::io(&self.path, e))?;
                file.read_exact(dst).map_err(|e| Error::io(&self.path, e))?;
            }
        }
        Ok(())
    }

    /// Read one tensor as `T`, checking its dtype is one of `T`'s.
    pub fn read_as<T: LeElem>(&self, name: &str) -> Result<Vec<T>> {
        let info = self
            .info(name)
            .ok_or_else(|| Error::Format(FormatError::MissingTensors(vec![name.to_string()])))?;
        if info.dtype != T::DTYPE {
            return Err(Error::Format(FormatError::TensorDtype {
                tensor: name.to_string(),
                expected: T::DTYPE.name(),
                got: info.dtype.name().to_string(),
            }));
        }
        if cfg!(target_endian = "big") {
            return Ok(T::from_le(&self.read(name)?));
        }
        // Little-endian: read straight into the typed buffer (no byte copy alongside it).
        let mut values = vec![T::zeroed(); info.numel()];
        let mut file = File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
        file.seek(SeekFrom::Start(info.offset)).map_err(|e| Error::io(&self.path, e))?;
        file.read_exact(bytemuck::cast_slice_mut(&mut values)).map_err(|e| Error::io(&self.path, e))?;
        Ok(values)
    }
}

/// Element types read from (and written to) little-endian tensor bytes.
pub trait LeElem: bytemuck::Pod {
    /// The safetensors dtype of this type.
    const DTYPE: Dtype;
    /// Decode little-endian bytes (length a multiple of the size).
    fn from_le(bytes: &[u8]) -> Vec<Self>;
    /// Append this value's little-endian bytes.
    fn put_le(self, out: &mut Vec<u8>);
    /// Append every value's little-endian bytes (one copy on little-endian targets).
    fn extend_le(values: &[Self], out: &mut Vec<u8>);
}

macro_rules! le_elem {
    ($t:ty, $d:expr, $n:literal, $from:expr, $to:expr) => {
        impl LeElem for $t {
            const DTYPE: Dtype = $d;
            fn from_le(bytes: &[u8]) -> Vec<Self> {
                bytes
                    .chunks_exact($n)
                    .map(|b| {
                        let mut a = [0u8; $n];
                        a.copy_from_slice(b);
                        ($from)(a)
                    })
                    .collect()
            }
            fn put_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&($to)(self));
            }
            fn extend_le(values: &[Self], out: &mut Vec<u8>) {
                if cfg!(target_endian = "little") {
                    out.extend_from_slice(bytemuck::cast_slice(values));
                } else {
                    values.iter().for_each(|v| v.put_le(out));
                }
            }
        }
    };
}
le_elem!(u8, Dtype::U8, 1, u8::from_le_bytes, u8::to_le_bytes);
le_elem!(i32, Dtype::I32, 4, i32::from_le_bytes, i32::to_le_bytes);
le_elem!(f32, Dtype::F32, 4, f32::from_le_bytes, f32::to_le_bytes);
le_elem!(half::f16, Dtype::F16, 2, half::f16::from_le_bytes, half::f16::to_le_bytes);
le_elem!(half::bf16, Dtype::Bf16, 2, half::bf16::from_le_bytes, half::bf16::to_le_bytes);

/// Little-endian bytes of a slice.
pub fn to_le_bytes<T: LeElem>(values: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(std::mem::size_of_val(values));
    T::extend_le(values, &mut out);
    out
}

/// One tensor to write: its name, dtype, shape and little-endian bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedTensor {
    /// The full tensor name (`<layer prefix>.<part>`).
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Little-endian bytes, `shape`'s product times `dtype`'s size.
    pub data: Vec<u8>,
}

impl NamedTensor {
    /// A tensor of `i32` values.
    pub fn i32s(name: String, shape: Vec<usize>, values: &[i32]) -> Self {
        Self { name, dtype: Dtype::I32, shape, data: to_le_bytes(values) }
    }

    /// A tensor of floats in their own type (`F32`, `F16` or `BF16`).
    ///
    /// ```
    /// use quant_kernels::FloatVec;
    /// use quant_kernels::io::{Dtype, NamedTensor};
    /// let t = NamedTensor::floats("l.bias".into(), vec![2], &FloatVec::F16(vec![half::f16::ONE; 2]));
    /// assert_eq!((t.dtype, t.data), (Dtype::F16, vec![0x00, 0x3c, 0x00, 0x3c]));
    /// ```
    pub fn floats(name: String, shape: Vec<usize>, values: &crate::elem::FloatVec) -> Self {
        use crate::elem::FloatVec;
        let (dtype, data) = match values {
            FloatVec::F32(x) => (Dtype::F32, to_le_bytes(x)),
            FloatVec::F16(x) => (Dtype::F16, to_le_bytes(x)),
            FloatVec::Bf16(x) => (Dtype::Bf16, to_le_bytes(x)),
        };
        Self { name, dtype, shape, data }
    }
}

/// A safetensors file written one tensor at a time: the header (names, dtypes, shapes) is
/// declared up front, then each tensor's bytes follow in the declared order, so nothing larger
/// than one tensor is ever held.
#[derive(Debug)]
pub struct SafetensorsWriter {
    path: PathBuf,
    file: BufWriter<File>,
    entries: Vec<(String, usize)>,
    next: usize,
    /// Bytes of `entries[next]` already written by [`SafetensorsWriter::write_part`].
    partial: usize,
}

impl SafetensorsWriter {
    /// Create `path` and write the header for `tensors` (written later in this order) and
    /// `metadata`. A name declared twice, or named `__metadata__`, is an [`FormatError::Safetensors`]
    /// (nothing is created).
    pub fn create(
        path: impl AsRef<Path>,
        tensors: &[(String, Dtype, Vec<usize>)],
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self> {
        let path = path.as_ref();
        let mut header = serde_json::Map::new();
        if !metadata.is_empty() {
            header.insert("__metadata__".into(), serde_json::json!(metadata));
        }
        let mut entries = Vec::with_capacity(tensors.len());
        let mut at = 0usize;
        for (name, dtype, shape) in tensors {
            // A repeated name (or the metadata key) would leave a header that does not describe
            // the data written after it.
            if name == "__metadata__" || header.contains_key(name) {
                return Err(malformed(
                    &path.display().to_string(),
                    format!("tensor name `{name}` is declared twice or reserved"),
                ));
            }
            let len = shape.iter().try_fold(dtype.size(), |a, &d| a.checked_mul(d));
            let len = len
                .ok_or(Error::Kernel(KernelError::ShapeOverflow { rows: shape.len(), cols: dtype.size() }))?;
            let end = at
                .checked_add(len)
                .ok_or(Error::Kernel(KernelError::ShapeOverflow { rows: at, cols: len }))?;
            header.insert(
                name.clone(),
                serde_json::json!({"dtype": dtype.name(), "shape": shape, "data_offsets": [at, end]}),
            );
            entries.push((name.clone(), len));
            at = end;
        }
        let mut json = serde_json::Value::Object(header).to_string().into_bytes();
        json.resize(json.len().next_multiple_of(8), b' ');
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        let mut file = BufWriter::with_capacity(1 << 20, file);
        let io = |e: std::io::Error| Error::io(path, e);
        file.write_all(&(json.len() as u64).to_le_bytes()).map_err(io)?;
        file.write_all(&json).map_err(io)?;
        Ok(Self { path: path.to_path_buf(), file, entries, next: 0, partial: 0 })
    }

    /// Write the next declared tensor's bytes; `name` and the length must match the header.
    pub fn write(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let len = self.current(name)?;
        crate::error::expect_len("tensor bytes", len, bytes.len())?;
        self.write_part(name, bytes)
    }

    /// Append part of the next declared tensor's bytes (a tensor may be written in any number
    /// of parts, so a large one never needs to be in memory whole); the parts must not exceed
    /// its declared length, and it counts as written once they reach it.
    pub fn write_part(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let len = self.current(name)?;
        let end = self.partial + bytes.len();
        if end > len {
            return Err(Error::Kernel(KernelError::LengthMismatch {
                what: "tensor bytes",
                expected: len,
                got: end,
            }));
        }
        self.file.write_all(bytes).map_err(|e| Error::io(&self.path, e))?;
        self.partial = end;
        if end == len {
            self.next += 1;
            self.partial = 0;
        }
        Ok(())
    }

    /// The declared byte length of `name`, which must be the tensor due next.
    fn current(&self, name: &str) -> Result<usize> {
        let Some((expected, len)) = self.entries.get(self.next) else {
            return Err(Error::Format(FormatError::MissingTensors(vec![format!("{name} (not declared)")])));
        };
        if expected != name {
            return Err(Error::Format(FormatError::MissingTensors(vec![expected.clone()])));
        }
        Ok(*len)
    }

    /// Flush; every declared tensor must have been written.
    pub fn finish(mut self) -> Result<()> {
        if self.next != self.entries.len() {
            let missing = self.entries[self.next..].iter().map(|(n, _)| n.clone()).collect();
            return Err(Error::Format(FormatError::MissingTensors(missing)));
        }
        self.file.flush().map_err(|e| Error::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_file(path: &Path, header: &[u8], data: &[u8]) {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(data);
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn writer_output_reads_back_here_and_in_the_safetensors_crate() {
        let dir = std::env::temp_dir().join(format!("qk-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.safetensors");
        let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        let decl = vec![
            ("w".to_string(), Dtype::F32, vec![2, 3]),
            ("b".to_string(), Dtype::I32, vec![3]),
            ("e".to_string(), Dtype::F16, vec![0]),
        ];
        let mut w = SafetensorsWriter::create(&path, &decl, &meta).unwrap();
        let wv: Vec<f32> = (0..6).map(|i| i as f32 * 0.5).collect();
        assert!(w.write("b", &[0; 12]).is_err(), "out of order");
        w.write("w", &to_le_bytes(&wv)).unwrap();
        assert!(w.write("b", &[0; 11]).is_err(), "wrong length");
        w.write("b", &to_le_bytes(&[1i32, -2, 3])).unwrap();
        w.write("e", &[]).unwrap();
        w.finish().unwrap();
        // In parts: too many bytes are refused, the exact count completes the tensor.
        let mut w = SafetensorsWriter::create(&path, &decl, &meta).unwrap();
        let wb = to_le_bytes(&wv);
        w.write_part("w", &wb[..5]).unwrap();
        assert!(w.write_part("b", &[0; 4]).is_err(), "w is not complete");
        assert!(w.write_part("w", &wb[..20]).is_err(), "past the declared length");
        w.write_part("w", &wb[5..]).unwrap();
        w.write("b", &to_le_bytes(&[1i32, -2, 3])).unwrap();
        w.write("e", &[]).unwrap();
        w.finish().unwrap();

        let f = SafetensorsFile::open(&path).unwrap();
        assert_eq!(f.read_as::<f32>("w").unwrap(), wv);
        assert_eq!(f.read_as::<i32>("b").unwrap(), [1, -2, 3]);
        assert!(matches!(f.read_as::<f32>("b"), Err(Error::Format(FormatError::TensorDtype { .. }))));
        assert_eq!(f.metadata()["format"], "pt");
        let bytes = std::fs::read(&path).unwrap();
        let st = ::safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("w").unwrap().shape(), [2, 3]);
        assert_eq!(st.tensor("b").unwrap().data(), to_le_bytes(&[1i32, -2, 3]));

        let mut w = SafetensorsWriter::create(&path, &decl, &meta).unwrap();
        w.write("w", &to_le_bytes(&wv)).unwrap();
        assert_eq!(w.finish(), Err(Error::Format(FormatError::MissingTensors(vec!["b".into(), "e".into()]))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn malformed_headers_are_typed_errors() {
        let cases: &[(&str, &[u8], usize)] = &[
            ("not json", b"{nope", 0),
            ("array", b"[1]", 0),
            ("unknown dtype", br#"{"a":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}}"#, 1),
            ("size mismatch", br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, 4),
            ("past the end", br#"{"a":{"dtype":"U8","shape":[9],"data_offsets":[0,9]}}"#, 4),
            ("gap", br#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}"#, 4),
            (
                "overlap",
                br#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}"#,
                3,
            ),
            ("trailing bytes", br#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#, 3),
            (
                "overflow",
                br#"{"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,0]}}"#,
                0,
            ),
            ("negative offset", br#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}}"#, 1),
            ("bad metadata", br#"{"__metadata__":{"a":1}}"#, 0),
        ];
        let dir = std::env::temp_dir().join(format!("qk-st-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (i, (what, header, data)) in cases.iter().enumerate() {
            let path = dir.join(format!("{i}.safetensors"));
            write_file(&path, header, &vec![0u8; *data]);
            let err = SafetensorsFile::open(&path).unwrap_err();
            assert!(matches!(err, Error::Format(FormatError::Safetensors { .. })), "{what}: {err}");
        }
        // Header length beyond the file, and a file shorter than 8 bytes.
        let path = dir.join("short.safetensors");
        std::fs::write(&path, 1000u64.to_le_bytes()).unwrap();
        assert!(matches!(SafetensorsFile::open(&path), Err(Error::Format(FormatError::Safetensors { .. }))));
        std::fs::write(&path, [1, 2, 3]).unwrap();
        assert!(matches!(SafetensorsFile::open(&path), Err(Error::Format(FormatError::Safetensors { .. }))));
        assert!(matches!(
            SafetensorsFile::open(dir.join("absent")),
            Err(Error::Format(FormatError::Io { .. }))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
