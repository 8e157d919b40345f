//! UQFF, both revisions, against the bytes mistral.rs wrote (`tests/fixtures/uqff_files/`,
//! copies of the project's `vectors/uqff/{legacy-v0.2.0,v1.2.0}/*.uqff`): read -> write is the
//! identity on every file, and quantizing the fixtures' input weight with this crate, then
//! writing, reproduces mistral.rs's bytes. Hostile bytes are typed errors, never panics.

use crate::common;
use quant_kernels::error::FormatError;

use common::T;
use half::{bf16, f16};
use quant_kernels::hqq::{self, Axis, HqqConfig};
use quant_kernels::io::uqff::{self, Extension, UqffHqqLayer};
use quant_kernels::{Error, FloatType, FloatVec, Parallelism};
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};

fn files(version: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/uqff_files").join(version);
    let mut v: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

/// Case name -> (bits, params dtype, bias, 48x128 shape).
fn parse_case(name: &str) -> (u8, FloatType, bool, bool) {
    let bits = name[3..4].parse().unwrap();
    let dtype = if name.contains("_bf16") {
        FloatType::Bf16
    } else if name.contains("_f16") {
        FloatType::F16
    } else {
        FloatType::F32
    };
    (bits, dtype, name.contains("_bias"), name.contains("48x128"))
}

/// The layer this crate builds for a case: quantize mistral.rs's input weight with its ISQ
/// settings, cast params, attach the bias `(i - 64) * 0.01` in the params dtype.
fn our_layer(name: &str) -> UqffHqqLayer {
    let (bits, dtype, bias, wide) = parse_case(name);
    let companion =
        if wide { format!("hqq{bits}_g64_ax0_f32_48x128") } else { format!("hqq{bits}_g64_ax0_f32") };
    let bytes = common::fixture(&format!("uqff/{companion}.safetensors"));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let input = T::get(&st, "input_weight");
    let (rows, cols) = (input.shape[0], input.shape[1]);
    let config = HqqConfig { optimization_steps: Some(10), ..HqqConfig::new(bits, 64, Axis::Zero) };
    let q = hqq::quantize_hqq(&input.f32s(), rows, cols, &config, Parallelism::RAYON).unwrap();
    let b: Vec<f32> = (0..rows).map(|i| (i as f32 - 64.0) * 0.01).collect();
    let bias = bias.then(|| match dtype {
        FloatType::F32 => FloatVec::F32(b.clone()),
        FloatType::F16 => FloatVec::F16(b.iter().map(|&x| f16::from_f32(x)).collect()),
        FloatType::Bf16 => FloatVec::Bf16(b.iter().map(|&x| bf16::from_f32(x)).collect()),
    });
    UqffHqqLayer::from_quantized(&q, &config, dtype, bias).unwrap()
}

#[test]
fn legacy_blobs_round_trip_and_match_our_quantizer() {
    let files = files("legacy-v0.2.0");
    assert_eq!(files.len(), 18);
    for path in files {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let blob = std::fs::read(&path).unwrap();
        let layer = uqff::read_legacy(&blob).unwrap();
        assert_eq!(uqff::write_legacy(&layer).unwrap(), blob, "{name}: read -> write");
        let ours = our_layer(&name);
        assert_eq!(ours, layer, "{name}: our quantizer's layer");
        assert_eq!(uqff::write_legacy(&ours).unwrap(), blob, "{name}: our bytes");
        let (bits, dtype, bias, _) = parse_case(&name);
        assert_eq!(
            (layer.config.bits, layer.config.optimization_steps, layer.bias.is_some()),
            (bits, Some(10), bias)
        );
        if dtype == FloatType::F32 && !bias {
            // f32: the dequantized weight is mistral.rs's bit for bit (3-bit: mistral.rs's own
            // CPU dequant fails; ours drops the padding rows).
            let bytes = common::fixture(&format!("uqff/{name}.safetensors"));
            let st = SafeTensors::deserialize(&bytes).unwrap();
            let w: Vec<f32> = layer.dequantize(Parallelism::RAYON).unwrap();
            match st.tensor("dequantized") {
                Ok(_) => assert!(
                    w.iter().zip(T::get(&st, "dequantized").f32s()).all(|(a, b)| a.to_bits() == b.to_bits())
                ),
                Err(_) => assert_eq!(bits, 3),
            }
        }
    }
}

#[test]
fn legacy_file_container_round_trips() {
    let layers: Vec<UqffHqqLayer> = ["hqq4_g64_ax0_f32", "hqq4_g64_ax0_bf16_bias", "hqq3_g64_ax0_f32"]
        .iter()
        .map(|n| uqff::read_legacy(&common::fixture(&format!("uqff_files/legacy-v0.2.0/{n}.uqff"))).unwrap())
        .collect();
    let file = uqff::write_legacy_file(&layers, None).unwrap();
    let back = uqff::read_legacy_file(&file).unwrap();
    assert_eq!(back.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(back.iter().zip(&layers).all(|((_, a), b)| a == b));
    // Names recorded in the metadata come back; a wrong count is an error.
    let names: Vec<String> = ["a.weight", "b.weight", "c.weight"].map(String::from).to_vec();
    let named = uqff::write_legacy_file(&layers, Some(&names)).unwrap();
    let back = uqff::read_legacy_file_named(&named).unwrap();
    assert_eq!(back.iter().map(|(_, n, _)| n.clone().unwrap()).collect::<Vec<_>>(), names);
    assert!(uqff::write_legacy_file(&layers, Some(&names[..2])).is_err());
    // The blobs are U8 tensors named by index, as mistral.rs stores them.
    let st = SafeTensors::deserialize(&file).unwrap();
    assert_eq!(st.tensor("1").unwrap().dtype(), safetensors::Dtype::U8);
}

#[test]
fn v1_files_round_trip_and_match_our_quantizer() {
    let files = files("v1.2.0");
    assert_eq!(files.len(), 10);
    for path in files {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        let layers = uqff::read_v1(&bytes, Extension::Refuse).unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0].0, "model.layers.0.mlp.down_proj");
        assert_eq!(uqff::write_v1(&layers, Extension::Refuse).unwrap(), bytes, "{name}: read -> write");
        let ours = vec![(layers[0].0.clone(), our_layer(&name))];
        assert_eq!(ours[0].1, layers[0].1, "{name}");
        assert_eq!(uqff::write_v1(&ours, Extension::Refuse).unwrap(), bytes, "{name}: our bytes");
        // The same layer in the legacy format carries the same tensors.
        let legacy =
            uqff::read_legacy(&common::fixture(&format!("uqff_files/legacy-v0.2.0/{name}.uqff"))).unwrap();
        assert_eq!(legacy, layers[0].1, "{name}: legacy == v1.2");
    }
}

#[test]
fn low_bit_v1_is_an_extension_that_can_be_refused() {
    for bits in [1u8, 2, 3] {
        let layer = our_layer(&format!("hqq{bits}_g64_ax0_f32_bias"));
        let named = vec![("model.layers.3.mlp.up_proj".to_string(), layer)];
        assert!(matches!(
            uqff::write_v1(&named, Extension::Refuse),
            Err(Error::Format(FormatError::Uqff { .. }))
        ));
        let bytes = uqff::write_v1(&named, Extension::Allow).unwrap();
        assert_eq!(uqff::read_v1(&bytes, Extension::Allow).unwrap(), named);
        assert!(matches!(
            uqff::read_v1(&bytes, Extension::Refuse),
            Err(Error::Format(FormatError::Uqff { .. }))
        ));
    }
}

#[test]
fn versions_types_and_dtypes_are_named_in_errors() {
    let blob = common::fixture("uqff_files/legacy-v0.2.0/hqq4_g64_ax0_f32.uqff");
    let with = |at: usize, bytes: &[u8]| {
        let mut b = blob.clone();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        uqff::read_legacy(&b)
    };
    assert_eq!(
        with(0, &[0, 3, 0, 0]).unwrap_err(),
        Error::Format(FormatError::UqffVersion { major: 0, minor: 3, patch: 0 })
    );
    assert_eq!(
        with(0, &[0, 0, 1, 0]).unwrap_err(),
        Error::Format(FormatError::UqffVersion { major: 1, minor: 0, patch: 0 })
    );
    assert!(with(0, &[0, 1, 0, 0]).is_ok(), "older minors are read");
    assert_eq!(with(4, &[3]).unwrap_err(), Error::Format(FormatError::UqffQuantType(3)));
    // w_q's dtype code sits after its u32 length at offset 6.
    assert_eq!(with(10, &[10, 0, 0, 0]).unwrap_err(), Error::Format(FormatError::UqffDtype(10)));
    assert!(matches!(with(5, &[2]), Err(Error::Format(FormatError::Uqff { .. }))), "has_bias 2");
    // A trailing byte, and a bias flag without a bias.
    let mut long = blob.clone();
    long.push(0);
    assert!(matches!(uqff::read_legacy(&long), Err(Error::Format(FormatError::Uqff { .. }))));
    assert!(matches!(with(5, &[1]), Err(Error::Format(FormatError::Uqff { .. }))));

    let v1 = common::fixture("uqff_files/v1.2.0/hqq4_g64_ax0_f32.uqff");
    let layers = uqff::read_v1(&v1, Extension::Refuse).unwrap();
    // Rewrite the version by editing the minor scalar's bytes in place.
    let st = SafeTensors::deserialize(&v1).unwrap();
    let minor = st.tensor("uqff.version.minor").unwrap().data().as_ptr() as usize - v1.as_ptr() as usize;
    let mut newer = v1.clone();
    newer[minor] = 3;
    assert_eq!(
        uqff::read_v1(&newer, Extension::Allow).unwrap_err(),
        Error::Format(FormatError::UqffVersion { major: 1, minor: 3, patch: 0 })
    );
    assert_eq!(layers.len(), 1);
}

/// Every fixture truncated at every length and with every byte of its header flipped (a legacy
/// blob: every byte, fields and payload; a 1.2.0 file: the length word and the JSON header):
/// `Ok` or a typed error, never a panic (the fuzz target's body, over real inputs).
#[test]
fn hostile_bytes_never_panic() {
    for path in files("legacy-v0.2.0").iter().chain(&files("v1.2.0")) {
        let bytes = std::fs::read(path).unwrap();
        for cut in 0..bytes.len() {
            crate::fuzz_checks::uqff(&bytes[..cut]);
        }
        let header = if path.to_string_lossy().contains("legacy") {
            bytes.len()
        } else {
            8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
        };
        let mut b = bytes.clone();
        for i in 0..header {
            for flip in [0x01u8, 0x80, 0xff] {
                b[i] ^= flip;
                crate::fuzz_checks::uqff(&b);
                b[i] ^= flip;
            }
        }
        assert!(crate::fuzz_checks::uqff(&bytes), "{}", path.display());
    }
}
