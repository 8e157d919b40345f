//! AWQ's multiply: converted losslessly to GPTQ ([`super::awq_to_gptq`]) and run on GPTQ's
//! tile decoder.

use super::AwqLayer;
use crate::error::Result;
use crate::gptq::tile::Prepared;
use crate::gptq::{GptqLayer, ZeroFormat};
use crate::matmul::kernel::{Multiply, Scratch};
use crate::par::Parallelism;

impl Multiply for AwqLayer {
    type Prepared = Prepared;

    fn prepare(self) -> Result<Prepared> {
        let t = super::awq_to_gptq(&self.qweight, &self.qzeros, &self.layout)?;
        GptqLayer {
            layout: t.layout,
            format: ZeroFormat::V2,
            qweight: t.qweight,
            qzeros: t.qzeros,
            scales: self.scales,
            g_idx: None,
            bias: self.bias,
        }
        .prepare()
    }

    fn restore(p: Prepared) -> Self {
        let g = GptqLayer::restore(p);
        match super::gptq_to_awq(&g.qweight, &g.qzeros, &g.layout, g.format) {
            Ok((qweight, qzeros, layout)) => {
                AwqLayer { layout, qweight, qzeros, scales: g.scales, bias: g.bias }
            }
            Err(_) => unreachable!("the layer came from a validated AWQ layer"),
        }
    }

    /// GPTQ's: AWQ's codes and zero points are GPTQ's once converted.
    fn int8_weight(p: &Prepared) -> Result<crate::matmul::q8::Int8Weight> {
        GptqLayer::int8_weight(p)
    }

    fn prepared_bytes(p: &Prepared) -> usize {
        // AWQ's words hold the same codes and zero points in the same number of bytes.
        GptqLayer::prepared_bytes(p)
    }

    fn products_into(
        p: &Prepared,
        x: &[f32],
        batch: usize,
        par: Parallelism,
        y: &mut [f32],
        s: &mut Scratch,
    ) {
        GptqLayer::products_into(p, x, batch, par, y, s)
    }
}
