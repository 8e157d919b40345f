// HQQ's fused GEMV for batch 1 (hqq_gemv_{bits}b_{elem}_b1); see hqq_gemv.cuh.
#include "hqq_gemv.cuh"

QK_HQQ_GEMV_FILE(1)
