//! Compiles ../ptx/*.cu as C++20 against cuda_cpu_shim.h (threads and blocks become loops).
fn main() {
    let kernels = [
        "../ptx/hqq.cu",
        "../ptx/gptq.cu",
        "../ptx/gemv.cu",
        "../ptx/awq.cu",
        "../ptx/fp8.cu",
        "../ptx/intx.cu",
        "../ptx/hqq_gemv.cu",
        "../ptx/hqq_gemv8.cu",
        "../ptx/gptq_gemv.cu",
        "../ptx/hqq_gemm.cu",
        "../ptx/hqq_gemmg.cu",
        "../ptx/gptq_gemm.cu",
        "../ptx/gptq_gemmg.cu",
        "../ptx/gptq_gemmw.cu",
        "../ptx/hqq_gemmw.cu",
    ];
    let mut b = cc::Build::new();
    b.cpp(true)
        .std("c++20")
        .include(".")
        .include("../ptx")
        .flag("-x")
        .flag("c++") // g++ would take *.cu for a linker input
        .flag("-ffp-contract=off") // no FMA contraction: bit-exact against the Rust reference
        .flag("-fno-strict-aliasing") // the kernels view buffers as aligned vector structs
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-unknown-pragmas") // #pragma unroll is for NVRTC
        .opt_level(2);
    // QK_EMU_ASAN=1 (scripts/emu_asan.sh): the kernels under AddressSanitizer and UBSan's
    // alignment check, so an emulated thread reading or writing outside its buffers, or a vector
    // access off its alignment (the buffers sit at 256-byte boundaries like cudaMalloc's), fails
    // the test.
    println!("cargo:rerun-if-env-changed=QK_EMU_ASAN");
    if std::env::var_os("QK_EMU_ASAN").is_some() {
        b.flag("-fsanitize=address,alignment")
            .flag("-fno-sanitize-recover=alignment")
            .flag("-fno-omit-frame-pointer");
        println!("cargo:rustc-link-arg-tests=-lasan");
        println!("cargo:rustc-link-arg-tests=-lubsan");
    }
    for k in kernels {
        b.file(k);
        println!("cargo:rerun-if-changed={k}");
    }
    println!("cargo:rerun-if-changed=../ptx/common.cuh");
    println!("cargo:rerun-if-changed=../ptx/gemv.cuh");
    println!("cargo:rerun-if-changed=../ptx/gemm.cuh");
    println!("cargo:rerun-if-changed=../ptx/hqq_gemv.cuh");
    println!("cargo:rerun-if-changed=../ptx/gptq.cuh");
    println!("cargo:rerun-if-changed=../ptx/hqq_gemm.cuh");
    println!("cargo:rerun-if-changed=cuda_cpu_shim.h");
    b.compile("qk_cuda_emu");
}
