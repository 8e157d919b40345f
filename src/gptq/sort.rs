//! Act-order layers with their input rows sorted by group, the load-time step exllama and vLLM
//! take: a checkpoint written with `desc_act` scatters each group's rows over `K` (`g_idx` is a
//! permutation of groups), so a kernel that walks `K` in order must fetch a new zero point and
//! scale for nearly every row. Reordering the rows of `qweight` so that `g_idx` never decreases
//! (a stable sort, so rows of one group keep their order) makes the layer plain, or nearly: with
//! every group `group_size` rows long, as GPTQ writes them, the sorted `g_idx` is `k /
//! group_size` and is dropped. The inputs are reordered the same way, `x'[k'] = x[perm[k']]`, so
//! `x' · W' = x · W`, and row `k'` of the sorted layer's dequantized `W'` is row `perm[k']` of `W`,
//! bit for bit.
//!
//! [`crate::matmul::QuantLinear`] does this itself for act-order GPTQ weights; the functions here
//! are for callers that run the GPU kernels ([`crate::cuda`]) or keep their own weights.

use super::layout::{field, locate};
use super::{GptqLayer, GptqLayout, groups_of_rows};
use crate::error::{Error, KernelError, Result, expect_len};

/// Check that `perm` is a permutation of `0..len`.
pub fn check_permutation(perm: &[u32], len: usize) -> Result<()> {
    expect_len("perm", len, perm.len())?;
    let mut seen = vec![false; len];
    for (index, &v) in perm.iter().enumerate() {
        let fresh = seen.get_mut(v as usize).map(|s| !std::mem::replace(s, true)).unwrap_or(false);
        if !fresh {
            return Err(Error::Kernel(KernelError::Permutation { index, value: v as u64, len }));
        }
    }
    Ok(())
}

/// The stable order of rows by group: `perm[k']` is the original row that goes to place `k'`,
/// so `g_idx[perm[k']]` never decreases. Every value of `g_idx` is checked.
///
/// ```
/// use quant_kernels::gptq::{GptqLayout, sort::group_order};
/// let l = GptqLayout::new(8, 8, 4, 4)?;  // two groups of 4 rows
/// let (perm, sorted) = group_order(&[1, 0, 0, 1, 0, 1, 1, 0], &l)?;
/// assert_eq!(perm, [1, 2, 4, 7, 0, 3, 5, 6]);
/// assert_eq!(sorted, [0, 0, 0, 0, 1, 1, 1, 1]);
/// # Ok::<(), quant_kernels::Error>(())
/// ```
pub fn group_order(g_idx: &[i32], layout: &GptqLayout) -> Result<(Vec<u32>, Vec<i32>)> {
    let groups = groups_of_rows(layout, Some(g_idx))?;
    let perm = order_by_group(&groups, layout.groups());
    let sorted = perm.iter().map(|&k| g_idx[k as usize]).collect();
    Ok((perm, sorted))
}

/// [`group_order`]'s order from groups already checked to be `< groups`: a counting sort,
/// stable, O(K + G).
pub(crate) fn order_by_group(rows_group: &[u32], groups: usize) -> Vec<u32> {
    let mut start = vec![0usize; groups + 1];
    for &g in rows_group {
        start[g as usize + 1] += 1;
    }
    for i in 1..start.len() {
        start[i] += start[i - 1];
    }
    let mut perm = vec![0u32; rows_group.len()];
    for (k, &g) in rows_group.iter().enumerate() {
        perm[start[g as usize]] = k as u32;
        start[g as usize] += 1;
    }
    perm
}

/// The inverse of a permutation `perm` (checked by the caller): `inverse(perm)[perm[k]] == k`,
/// the order that puts sorted rows back in place.
///
/// ```
/// assert_eq!(quant_kernels::gptq::sort::inverse(&[2, 0, 1]), [1, 2, 0]);
/// ```
pub fn inverse(perm: &[u32]) -> Vec<u32> {
    let mut inv = vec![0u32; perm.len()];
    for (k, &p) in perm.iter().enumerate() {
        inv[p as usize] = k as u32;
    }
    inv
}

/// `qweight` with its input rows permuted: row `k` of the result is row `perm[k]` of `qweight`
/// (codes repacked along `K`, any width). `perm` must be a permutation of `0..K`.
///
/// ```
/// use quant_kernels::gptq::{GptqLayout, sort::permute_rows};
/// let l = GptqLayout::new(8, 8, 4, -1)?;
/// // Column 0 holds codes 0..7 along K, column 1 codes 8..15; the rows reversed:
/// let q = permute_rows(&[0x7654_3210, 0xfedc_ba98u32 as i32, 0, 0, 0, 0, 0, 0], &[7, 6, 5, 4, 3, 2, 1, 0], &l)?;
/// assert_eq!(q, [0x0123_4567, 0x89ab_cdefu32 as i32, 0, 0, 0, 0, 0, 0]);
/// # Ok::<(), quant_kernels::Error>(())
/// ```
pub fn permute_rows(qweight: &[i32], perm: &[u32], layout: &GptqLayout) -> Result<Vec<i32>> {
    let (wrows, n) = layout.qweight_shape();
    expect_len("qweight", wrows * n, qweight.len())?;
    check_permutation(perm, layout.k())?;
    Ok(repack_rows(qweight, perm, layout))
}

/// [`permute_rows`] on a `qweight` and `perm` whose lengths and values the caller checked.
pub(crate) fn repack_rows(qweight: &[i32], perm: &[u32], layout: &GptqLayout) -> Vec<i32> {
    let (wrows, n) = layout.qweight_shape();
    let bits = layout.bits();
    let mut out = vec![0i32; qweight.len()];
    if n == 0 {
        return out;
    }
    // Place k takes source row perm[k]: per place, one pass over the N columns of the source
    // word row (and the next, for a 3-bit field that straddles two words) and of the target's.
    for (k, &src) in perm.iter().enumerate() {
        let (sw, _) = locate(src as usize, bits);
        let (dw, dshift) = locate(k, bits);
        let src_rows = &qweight[sw * n..(sw + 2).min(wrows) * n];
        let straddles = dshift + bits as u32 > 32;
        for col in 0..n {
            let code = field(|j| src_rows[(j - sw) * n + col] as u32, src as usize, bits);
            out[dw * n + col] |= (code << dshift) as i32;
            if straddles {
                out[(dw + 1) * n + col] |= (code >> (32 - dshift)) as i32;
            }
        }
    }
    out
}

/// `x` with each of its `batch` rows of `K` inputs permuted: `out[b][k] = x[b][perm[k]]`.
///
/// ```
/// use quant_kernels::gptq::sort::permute_inputs;
/// assert_eq!(permute_inputs(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], 2, &[2, 0, 1])?, [3.0, 1.0, 2.0, 6.0, 4.0, 5.0]);
/// # Ok::<(), quant_kernels::Error>(())
/// ```
pub fn permute_inputs<T: Copy>(x: &[T], batch: usize, perm: &[u32]) -> Result<Vec<T>> {
    let k = perm.len();
    check_permutation(perm, k)?;
    let n = batch.checked_mul(k).ok_or(Error::Kernel(KernelError::ShapeOverflow { rows: batch, cols: k }))?;
    expect_len("x", n, x.len())?;
    let mut out = Vec::with_capacity(n);
    for row in x.chunks_exact(k.max(1)).take(batch) {
        out.extend(perm.iter().map(|&p| row[p as usize]));
    }
    Ok(out)
}

impl GptqLayer {
    /// This layer with its input rows sorted by group, and the order: row `k'` of the result is
    /// row `perm[k']` of `self` (see the [module docs](self)). A layer without `g_idx`, or
    /// whose `g_idx` already never decreases, comes back unchanged with the identity. The
    /// result's `g_idx` is `None` when the sorted groups are `k / group_size` (every group
    /// `group_size` rows long); `qzeros`, `scales` and `bias` are shared as they are.
    ///
    /// ```
    /// use quant_kernels::gptq::{GptqLayer, GptqLayout, ZeroFormat};
    /// use quant_kernels::{FloatVec, Parallelism};
    /// let layout = GptqLayout::new(16, 8, 4, 8)?;  // two groups of 8 rows
    /// let g_idx: Vec<i32> = (0..16).map(|k| k % 2).collect();  // even rows: group 0
    /// let layer = GptqLayer {
    ///     layout,
    ///     format: ZeroFormat::V2,
    ///     qweight: (0..16).map(|i| 0x7654_3210 + i).collect(),
    ///     qzeros: vec![0x8888_8888u32 as i32, 0x4444_4444],
    ///     scales: FloatVec::F32(vec![0.5; 16]),
    ///     g_idx: Some(g_idx),
    ///     bias: None,
    /// };
    /// let (sorted, perm) = layer.sort_by_group()?;
    /// assert_eq!(perm, [0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15]);
    /// assert_eq!(sorted.g_idx, None);  // now k / 8
    /// let (w, ws) = (layer.dequantize_kn::<f32>(Parallelism::SERIAL)?, sorted.dequantize_kn::<f32>(Parallelism::SERIAL)?);
    /// for (k, &p) in perm.iter().enumerate() {
    ///     assert_eq!(ws[k * 8..][..8], w[p as usize * 8..][..8]);
    /// }
    /// # Ok::<(), quant_kernels::Error>(())
    /// ```
    pub fn sort_by_group(&self) -> Result<(GptqLayer, Vec<u32>)> {
        let l = &self.layout;
        let identity = || (self.clone(), (0..l.k() as u32).collect());
        let Some(g_idx) = &self.g_idx else { return Ok(identity()) };
        let (wrows, n) = l.qweight_shape();
        expect_len("qweight", wrows * n, self.qweight.len())?;
        let groups = groups_of_rows(l, Some(g_idx))?;
        if groups.windows(2).all(|w| w[0] <= w[1]) {
            return Ok(identity());
        }
        let perm = order_by_group(&groups, l.groups());
        let qweight = repack_rows(&self.qweight, &perm, l);
        let sorted: Vec<i32> = perm.iter().map(|&k| g_idx[k as usize]).collect();
        let g_idx = (sorted != l.default_g_idx()).then_some(sorted);
        Ok((GptqLayer { qweight, g_idx, ..self.clone() }, perm))
    }
}
