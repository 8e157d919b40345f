// HQQ's fused GEMV for batches of up to 8 rows (hqq_gemv_{bits}b_{elem}_b8); see hqq_gemv.cuh.
#include "hqq_gemv.cuh"

QK_HQQ_GEMV_FILE(8)
