// Peer benchmark: llama.cpp's (ggml's) CPU matrix multiply on quantized weights.
//
// Built and run by scripts/bench_llamacpp.sh against a pinned ggml; not part of CI.
// Uses only ggml's public API: the CPU backend from the backend registry, its extra
// buffer types (weights repacked at load time: CPU_REPACK, AMX, ... when the CPU has them),
// ggml_quantize_chunk for the weights and the type traits' to_float for the reference.
//
// For each weight type, shape (K in-features x N out-features), buffer kind and batch it
// times y[batch x N] = x[batch x K] * W^T with W quantized, x f32, over enough copies of W
// (>= --min-mib together) that each timed op reads a copy that was last touched a whole
// rotation ago, i.e. from DRAM rather than from the last-level cache.
//
// stdout: one JSON object per record.  stderr: progress and a summary table.

#define _POSIX_C_SOURCE 200809L

#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/resource.h>

#define MAX_LIST 16
#define MAX_RECORDS 512

// ---------------------------------------------------------------- options

struct shape { int64_t k, n; };

struct opts {
    const char * types[MAX_LIST]; int n_types;
    struct shape shapes[MAX_LIST]; int n_shapes;
    int batches[MAX_LIST]; int n_batches;
    const char * buffers[MAX_LIST]; int n_buffers; // 0: all that accept the op
    int threads;
    double min_mib;   // all copies of one weight together at least this large
    int reps;         // at least this many timed ops per record
    double min_time_s;// ... and at least this much timed time
    int max_reps;
    int warmup;
    bool check;
    uint64_t seed;
    const char * version;
};

static void usage(FILE * f) {
    fprintf(f,
        "usage: ggml_mul_mat [options]\n"
        "  --quick              4096x4096 only, fewer timed ops (10, >= 0.1 s)\n"
        "  --types LIST         weight types, default q4_0,q4_k (any ggml type name, e.g. q8_0)\n"
        "  --shapes LIST        KxN list (K in-features, N out-features), default 4096x4096,4096x14336\n"
        "  --batches LIST       default 1,8,32,128\n"
        "  --buffers LIST       buffer type names to run (e.g. CPU,CPU_REPACK), default all that accept the op\n"
        "  --threads N          default 2\n"
        "  --min-mib X          total size of the weight copies, default 1024\n"
        "  --reps N             minimum timed ops per record, default 20\n"
        "  --min-time S         minimum timed seconds per record, default 0.3\n"
        "  --max-reps N         default 2000\n"
        "  --warmup N           untimed ops before timing, default 3\n"
        "  --no-check           skip the f64 reference check\n"
        "  --seed N             default 42\n"
        "  --version STR        version string put in the records\n");
}

static int split(char * s, char ** out, int max) {
    int n = 0;
    for (char * tok = strtok(s, ","); tok && n < max; tok = strtok(NULL, ",")) {
        out[n++] = tok;
    }
    return n;
}

static void die(const char * msg, const char * arg) {
    fprintf(stderr, "ggml_mul_mat: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
    exit(2);
}

static void parse_opts(int argc, char ** argv, struct opts * o) {
    static char * types_default[] = { "q4_0", "q4_k" };
    memset(o, 0, sizeof(*o));
    o->n_types = 2; o->types[0] = types_default[0]; o->types[1] = types_default[1];
    o->n_shapes = 2; o->shapes[0] = (struct shape){4096, 4096}; o->shapes[1] = (struct shape){4096, 14336};
    o->n_batches = 4; o->batches[0] = 1; o->batches[1] = 8; o->batches[2] = 32; o->batches[3] = 128;
    o->threads = 2; o->min_mib = 1024; o->reps = 20; o->min_time_s = 0.3; o->max_reps = 2000;
    o->warmup = 3; o->check = true; o->seed = 42; o->version = "unknown";
    bool shapes_set = false, reps_set = false, time_set = false;
    bool quick = false;
    for (int i = 1; i < argc; i++) {
        const char * a = argv[i];
        const char * v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED() do { if (!v) die("missing value for", a); i++; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); exit(0); }
        else if (!strcmp(a, "--quick")) { quick = true; }
        else if (!strcmp(a, "--no-check")) { o->check = false; }
        else if (!strcmp(a, "--types")) {
            NEED(); char * l[MAX_LIST]; o->n_types = split(strdup(v), l, MAX_LIST);
            for (int j = 0; j < o->n_types; j++) o->types[j] = l[j];
        } else if (!strcmp(a, "--shapes")) {
            NEED(); char * l[MAX_LIST]; o->n_shapes = split(strdup(v), l, MAX_LIST); shapes_set = true;
            for (int j = 0; j < o->n_shapes; j++) {
                long long k, n;
                if (sscanf(l[j], "%lldx%lld", &k, &n) != 2 || k <= 0 || n <= 0) die("bad shape (want KxN)", l[j]);
                o->shapes[j] = (struct shape){k, n};
            }
        } else if (!strcmp(a, "--batches")) {
            NEED(); char * l[MAX_LIST]; o->n_batches = split(strdup(v), l, MAX_LIST);
            for (int j = 0; j < o->n_batches; j++) {
                o->batches[j] = atoi(l[j]);
                if (o->batches[j] <= 0) die("bad batch", l[j]);
            }
        } else if (!strcmp(a, "--buffers")) {
            NEED(); char * l[MAX_LIST]; o->n_buffers = split(strdup(v), l, MAX_LIST);
            for (int j = 0; j < o->n_buffers; j++) o->buffers[j] = l[j];
        } else if (!strcmp(a, "--threads"))  { NEED(); o->threads = atoi(v); }
        else if (!strcmp(a, "--min-mib"))    { NEED(); o->min_mib = atof(v); }
        else if (!strcmp(a, "--reps"))       { NEED(); o->reps = atoi(v); reps_set = true; }
        else if (!strcmp(a, "--min-time"))   { NEED(); o->min_time_s = atof(v); time_set = true; }
        else if (!strcmp(a, "--max-reps"))   { NEED(); o->max_reps = atoi(v); }
        else if (!strcmp(a, "--warmup"))     { NEED(); o->warmup = atoi(v); }
        else if (!strcmp(a, "--seed"))       { NEED(); o->seed = strtoull(v, NULL, 10); }
        else if (!strcmp(a, "--version"))    { NEED(); o->version = v; }
        else { usage(stderr); die("unknown option", a); }
#undef NEED
    }
    if (quick) {
        if (!shapes_set) { o->n_shapes = 1; }
        if (!reps_set) { o->reps = 10; }
        if (!time_set) { o->min_time_s = 0.1; }
    }
    if (o->threads <= 0 || o->reps <= 0 || o->warmup < 0) die("bad --threads/--reps/--warmup", NULL);
    if (o->max_reps < o->reps) o->max_reps = o->reps;
}

// ---------------------------------------------------------------- helpers

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t splitmix64(uint64_t * s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// roughly N(0, 1): sum of four uniforms, rescaled (cheap, bounded, bell-shaped)
static float rnd_normal(uint64_t * s) {
    uint64_t r = splitmix64(s);
    float acc = 0.0f;
    for (int i = 0; i < 4; i++) {
        acc += (float) ((r >> (16 * i)) & 0xffff) * (1.0f / 65536.0f);
    }
    return (acc - 2.0f) * 1.7320508f;
}

// CPU time of the whole process (all threads), seconds
static double cpu_time_s(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

static int cmp_double(const void * a, const void * b) {
    double x = *(const double *) a, y = *(const double *) b;
    return (x > y) - (x < y);
}

static enum ggml_type type_by_name(const char * name) {
    for (int t = 0; t < GGML_TYPE_COUNT; t++) {
        const char * tn = ggml_type_name((enum ggml_type) t);
        if (tn && strcasecmp(tn, name) == 0 && ggml_get_type_traits((enum ggml_type) t)->blck_size > 0) {
            return (enum ggml_type) t;
        }
    }
    die("unknown ggml type", name);
    return GGML_TYPE_COUNT;
}

static void lower(char * dst, const char * src, size_t n) {
    size_t i = 0;
    for (; src[i] && i + 1 < n; i++) dst[i] = (char) ((src[i] >= 'A' && src[i] <= 'Z') ? src[i] + 32 : src[i]);
    dst[i] = 0;
}

// f64 dot product with independent accumulators (lets the compiler vectorize without fast-math)
static double dot_f64(const float * a, const float * b, int64_t n) {
    double s[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int j = 0; j < 8; j++) s[j] += (double) a[i + j] * (double) b[i + j];
    }
    for (; i < n; i++) s[0] += (double) a[i] * (double) b[i];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

// ---------------------------------------------------------------- records

struct record {
    char type[16], buffer[32];
    int64_t k, n;
    int batch, copies, ops;
    double median_us, min_us, gflops, weight_gbs, max_rel_err;
    double cpu_share; // CPU time of the process / (threads x wall time) over the timed ops
};

static struct record records[MAX_RECORDS];
static int n_records = 0;

static void emit(const struct opts * o, const struct record * r) {
    printf("{\"peer\":\"llama.cpp\",\"version\":\"%s\",\"ggml\":\"%s\",\"ggml_commit\":\"%s\","
           "\"type\":\"%s\",\"buffer\":\"%s\",\"k\":%lld,\"n\":%lld,\"batch\":%d,\"threads\":%d,"
           "\"copies\":%d,\"ops\":%d,\"median_us\":%.2f,\"min_us\":%.2f,\"gflops\":%.2f,\"weight_gbs\":%.2f,"
           "\"cpu_share\":%.3f,",
           o->version, ggml_version(), ggml_commit(), r->type, r->buffer, (long long) r->k, (long long) r->n,
           r->batch, o->threads, r->copies, r->ops, r->median_us, r->min_us, r->gflops, r->weight_gbs, r->cpu_share);
    if (isnan(r->max_rel_err)) {
        printf("\"max_rel_err\":null}\n");
    } else {
        printf("\"max_rel_err\":%.3e}\n", r->max_rel_err);
    }
    fflush(stdout);
    if (n_records < MAX_RECORDS) records[n_records++] = *r;
}

// ggml's debug lines (one "repack: repack tensor ..." per weight copy) are dropped
static void log_cb(enum ggml_log_level level, const char * text, void * user) {
    (void) user;
    static enum ggml_log_level last = GGML_LOG_LEVEL_INFO;
    if (level != GGML_LOG_LEVEL_CONT) last = level;
    if (last == GGML_LOG_LEVEL_DEBUG) return;
    fputs(text, stderr);
}

// ---------------------------------------------------------------- main

int main(int argc, char ** argv) {
    struct opts o;
    parse_opts(argc, argv, &o);
    ggml_log_set(log_cb, NULL);

    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (!dev) die("no CPU device in the ggml backend registry", NULL);
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
    ggml_backend_t backend = ggml_backend_dev_init(dev, NULL);
    if (!backend) die("ggml_backend_dev_init failed", NULL);
    ggml_backend_cpu_set_n_threads(backend, o.threads);
    // a persistent thread pool, as llama.cpp uses (with OpenMP builds ggml uses OpenMP's team instead)
    struct ggml_threadpool_params tpp = ggml_threadpool_params_default(o.threads);
    struct ggml_threadpool * tp = ggml_threadpool_new(&tpp);
    ggml_backend_cpu_set_threadpool(backend, tp);

    // buffer kinds: the plain CPU buffer, then each extra buffer type of the CPU device
    ggml_backend_buffer_type_t bufts[MAX_LIST];
    int n_bufts = 0;
    bufts[n_bufts++] = ggml_backend_dev_buffer_type(dev);
    ggml_backend_dev_get_extra_bufts_t get_extra =
        (ggml_backend_dev_get_extra_bufts_t) ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts");
    if (get_extra) {
        for (ggml_backend_buffer_type_t * e = get_extra(dev); e && *e && n_bufts < MAX_LIST; e++) {
            bufts[n_bufts++] = *e;
        }
    }

    fprintf(stderr, "# peer: llama.cpp via %s, ggml %s (commit %s)\n", o.version, ggml_version(), ggml_commit());
    fprintf(stderr, "# device: %s (%s), threads %d\n", ggml_backend_dev_name(dev), ggml_backend_dev_description(dev), o.threads);
    fprintf(stderr, "# cpu: avx2 %d avx512 %d avx512_vnni %d avx512_bf16 %d avx_vnni %d amx_int8 %d llamafile %d\n",
            ggml_cpu_has_avx2(), ggml_cpu_has_avx512(), ggml_cpu_has_avx512_vnni(), ggml_cpu_has_avx512_bf16(),
            ggml_cpu_has_avx_vnni(), ggml_cpu_has_amx_int8(), ggml_cpu_has_llamafile());
    fprintf(stderr, "# buffer types:");
    for (int b = 0; b < n_bufts; b++) fprintf(stderr, " %s%s", ggml_backend_buft_name(bufts[b]), b ? " (extra)" : "");
    fprintf(stderr, "%s\n", n_bufts == 1 ? "  (no extra buffer types)" : "");

    int max_batch = 0;
    for (int i = 0; i < o.n_batches; i++) if (o.batches[i] > max_batch) max_batch = o.batches[i];

    ggml_backend_buffer_type_t cpu_buft = bufts[0];

    for (int ti = 0; ti < o.n_types; ti++) {
        enum ggml_type type = type_by_name(o.types[ti]);
        const struct ggml_type_traits * tr = ggml_get_type_traits(type);
        if (!tr->to_float) die("type has no to_float", o.types[ti]);
        char tname[16];
        lower(tname, ggml_type_name(type), sizeof(tname));

        for (int si = 0; si < o.n_shapes; si++) {
            const int64_t K = o.shapes[si].k, N = o.shapes[si].n;
            if (K % tr->blck_size) { fprintf(stderr, "# skip %s %lldx%lld: K not a multiple of %lld\n", tname, (long long) K, (long long) N, (long long) tr->blck_size); continue; }
            const size_t row_bytes = ggml_row_size(type, K);
            const size_t w_bytes = row_bytes * (size_t) N;

            // random weights from a fixed seed, quantized once; each copy gets the same bytes
            uint64_t rs = o.seed * 1000003u + (uint64_t) ti * 7919u + (uint64_t) si;
            double t0 = now_s();
            float * wf = malloc(sizeof(float) * (size_t) K * (size_t) N);
            void * wq = malloc(w_bytes);
            float * xf = malloc(sizeof(float) * (size_t) K * (size_t) max_batch);
            if (!wf || !wq || !xf) die("out of memory (host weights)", NULL);
            for (size_t i = 0; i < (size_t) K * (size_t) N; i++) wf[i] = rnd_normal(&rs) * 0.02f;
            for (size_t i = 0; i < (size_t) K * (size_t) max_batch; i++) xf[i] = rnd_normal(&rs);
            ggml_quantize_init(type);
            size_t qb = ggml_quantize_chunk(type, wf, wq, 0, N, K, NULL);
            if (qb != w_bytes) die("ggml_quantize_chunk size mismatch", NULL);
            free(wf);
            double t_quant = now_s() - t0;

            // reference: f64 dot products of the dequantized weight rows with the f32 activations
            double * ref = NULL;
            double t_ref = 0;
            if (o.check) {
                t0 = now_s();
                ref = malloc(sizeof(double) * (size_t) N * (size_t) max_batch);
                float * row = malloc(sizeof(float) * (size_t) K);
                if (!ref || !row) die("out of memory (reference)", NULL);
                for (int64_t n = 0; n < N; n++) {
                    tr->to_float((const char *) wq + (size_t) n * row_bytes, row, K);
                    for (int b = 0; b < max_batch; b++) ref[(size_t) b * N + n] = dot_f64(row, xf + (size_t) b * K, K);
                }
                free(row);
                t_ref = now_s() - t0;
            }
            fprintf(stderr, "# %s %lldx%lld: %.2f MiB per copy; quantize %.1f s, reference %.1f s\n", tname,
                    (long long) K, (long long) N, w_bytes / 1048576.0, t_quant, t_ref);

            int copies = (int) ceil(o.min_mib * 1048576.0 / (double) w_bytes);
            if (copies < 1) copies = 1;

            for (int bi = 0; bi < n_bufts; bi++) {
                ggml_backend_buffer_type_t buft = bufts[bi];
                const char * bname = ggml_backend_buft_name(buft);
                if (o.n_buffers) {
                    bool want = false;
                    for (int j = 0; j < o.n_buffers; j++) want |= strcasecmp(o.buffers[j], bname) == 0;
                    if (!want) continue;
                }

                // the weight copies, in one or more buffers of this type
                struct ggml_init_params wp = { .mem_size = (size_t) copies * ggml_tensor_overhead() + 1024, .mem_buffer = NULL, .no_alloc = true };
                struct ggml_context * ctx_w = ggml_init(wp);
                struct ggml_tensor ** w = malloc(sizeof(*w) * (size_t) copies);
                for (int c = 0; c < copies; c++) {
                    w[c] = ggml_new_tensor_2d(ctx_w, type, K, N);
                    ggml_format_name(w[c], "w%d", c);
                }
                ggml_backend_buffer_t wbuf = ggml_backend_alloc_ctx_tensors_from_buft(ctx_w, buft);
                if (!wbuf) die("could not allocate the weight copies in buffer type", bname);
                ggml_backend_buffer_set_usage(wbuf, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);

                // does this buffer type take the op? (as llama.cpp asks when placing weights)
                bool ok;
                {
                    struct ggml_init_params pp = { .mem_size = 4 * ggml_tensor_overhead(), .mem_buffer = NULL, .no_alloc = true };
                    struct ggml_context * ctx_p = ggml_init(pp);
                    struct ggml_tensor * xp = ggml_new_tensor_2d(ctx_p, GGML_TYPE_F32, K, 1);
                    ok = ggml_backend_dev_supports_op(dev, ggml_mul_mat(ctx_p, w[0], xp));
                    ggml_free(ctx_p);
                }
                if (!ok) {
                    fprintf(stderr, "# %s %lldx%lld: buffer %s does not accept this mul_mat, skipped\n", tname, (long long) K, (long long) N, bname);
                    ggml_backend_buffer_free(wbuf);
                    ggml_free(ctx_w);
                    free(w);
                    continue;
                }

                // upload (an extra buffer type repacks here)
                t0 = now_s();
                for (int c = 0; c < copies; c++) ggml_backend_tensor_set(w[c], wq, 0, w_bytes);
                fprintf(stderr, "# %s %lldx%lld %s: %d copies = %.0f MiB, upload %.2f s\n", tname, (long long) K, (long long) N,
                        bname, copies, copies * (double) w_bytes / 1048576.0, now_s() - t0);

                // rotation cursor over the copies, kept across batches: every op reads the
                // copy that was touched least recently (copies-1 other copies ago)
                int cursor = 0;

                for (int bti = 0; bti < o.n_batches; bti++) {
                    const int B = o.batches[bti];
                    size_t gmem = (size_t) (copies + 2) * ggml_tensor_overhead() + (size_t) copies * ggml_graph_overhead_custom(4, false) + 4096;
                    struct ggml_init_params gp = { .mem_size = gmem, .mem_buffer = NULL, .no_alloc = true };
                    struct ggml_context * ctx_g = ggml_init(gp);
                    struct ggml_tensor * x = ggml_new_tensor_2d(ctx_g, GGML_TYPE_F32, K, B);
                    struct ggml_tensor ** y = malloc(sizeof(*y) * (size_t) copies);
                    struct ggml_cgraph ** g = malloc(sizeof(*g) * (size_t) copies);
                    for (int c = 0; c < copies; c++) {
                        y[c] = ggml_mul_mat(ctx_g, w[c], x);
                        g[c] = ggml_new_graph_custom(ctx_g, 4, false);
                        ggml_build_forward_expand(g[c], y[c]);
                    }
                    // x and one output area shared by all the ops (outputs are small; sharing
                    // keeps them from pushing the weights around in the cache)
                    const size_t align = ggml_backend_buft_get_alignment(cpu_buft);
                    const size_t x_sz = (ggml_nbytes(x) + align - 1) / align * align;
                    const size_t y_sz = ggml_nbytes(y[0]);
                    ggml_backend_buffer_t abuf = ggml_backend_buft_alloc_buffer(cpu_buft, x_sz + y_sz + align);
                    if (!abuf) die("could not allocate activations", NULL);
                    char * base = (char *) ggml_backend_buffer_get_base(abuf);
                    ggml_backend_tensor_alloc(abuf, x, base);
                    for (int c = 0; c < copies; c++) ggml_backend_tensor_alloc(abuf, y[c], base + x_sz);
                    ggml_backend_tensor_set(x, xf, 0, ggml_nbytes(x));

                    // correctness, on the next copy in the rotation
                    double max_rel = NAN;
                    if (o.check) {
                        if (ggml_backend_graph_compute(backend, g[cursor]) != GGML_STATUS_SUCCESS) die("graph compute failed", NULL);
                        cursor = (cursor + 1) % copies;
                        float * out = malloc(y_sz);
                        ggml_backend_tensor_get(y[0], out, 0, y_sz); // same memory as every y[c]
                        double max_ref = 0, max_err = 0;
                        for (size_t i = 0; i < (size_t) N * B; i++) {
                            double r = ref[i]; // y is [N x B] with N contiguous, like ref
                            if (fabs(r) > max_ref) max_ref = fabs(r);
                            double e = fabs((double) out[i] - r);
                            if (!(e <= max_err)) max_err = e; // NaN propagates
                        }
                        max_rel = max_ref > 0 ? max_err / max_ref : max_err;
                        free(out);
                    }

                    for (int i = 0; i < o.warmup; i++) {
                        if (ggml_backend_graph_compute(backend, g[cursor]) != GGML_STATUS_SUCCESS) die("graph compute failed", NULL);
                        cursor = (cursor + 1) % copies;
                    }

                    double * ts = malloc(sizeof(double) * (size_t) o.max_reps);
                    int ops = 0;
                    double total = 0;
                    // the compute threads run (or spin at barriers) throughout, so the process
                    // should get threads x wall time of CPU; much less means it shared the cores
                    const double cpu0 = cpu_time_s(), wall0 = now_s();
                    while (ops < o.max_reps && (ops < o.reps || total < o.min_time_s)) {
                        double a = now_s();
                        enum ggml_status st = ggml_backend_graph_compute(backend, g[cursor]);
                        double d = now_s() - a;
                        if (st != GGML_STATUS_SUCCESS) die("graph compute failed", NULL);
                        cursor = (cursor + 1) % copies;
                        ts[ops++] = d;
                        total += d;
                    }
                    const double cpu_share = (cpu_time_s() - cpu0) / (o.threads * (now_s() - wall0));
                    qsort(ts, (size_t) ops, sizeof(double), cmp_double);
                    double med = ops % 2 ? ts[ops / 2] : 0.5 * (ts[ops / 2 - 1] + ts[ops / 2]);

                    struct record r = {0};
                    snprintf(r.type, sizeof(r.type), "%s", tname);
                    snprintf(r.buffer, sizeof(r.buffer), "%s", bname);
                    r.k = K; r.n = N; r.batch = B; r.copies = copies; r.ops = ops;
                    r.median_us = med * 1e6;
                    r.min_us = ts[0] * 1e6;
                    r.gflops = 2.0 * (double) K * (double) N * B / med * 1e-9;
                    r.weight_gbs = (double) w_bytes / med * 1e-9;
                    r.max_rel_err = max_rel;
                    r.cpu_share = cpu_share;
                    emit(&o, &r);
                    fprintf(stderr, "# %-5s %-10s %5lldx%-5lld b=%-3d  median %10.1f us  min %10.1f us  %7.1f GFLOP/s  %6.1f GB/s  err %.2e  (%d ops, cpu share %.2f)\n",
                            r.type, r.buffer, (long long) K, (long long) N, B, r.median_us, r.min_us, r.gflops, r.weight_gbs, r.max_rel_err, ops, cpu_share);

                    free(ts);
                    ggml_backend_buffer_free(abuf);
                    free(g);
                    free(y);
                    ggml_free(ctx_g);
                }

                ggml_backend_buffer_free(wbuf);
                ggml_free(ctx_w);
                free(w);
            }
            free(ref);
            free(xf);
            free(wq);
        }
    }

    // summary table
    fprintf(stderr, "\n%-6s %-11s %-11s %5s %12s %12s %9s %8s %11s %9s\n", "type", "buffer", "KxN", "batch", "median_us", "min_us", "GFLOP/s", "GB/s", "max_rel_err", "cpu_share");
    int contended = 0;
    for (int i = 0; i < n_records; i++) {
        const struct record * r = &records[i];
        char shp[32];
        snprintf(shp, sizeof(shp), "%lldx%lld", (long long) r->k, (long long) r->n);
        // ~1.0 on a quiet machine; another busy process on these cores takes a share, and each
        // preemption costs the op whole scheduler ticks while the other thread waits at a barrier
        const bool busy = r->cpu_share < 0.9;
        contended += busy;
        fprintf(stderr, "%-6s %-11s %-11s %5d %12.1f %12.1f %9.1f %8.1f %11.2e %9.2f%s\n", r->type, r->buffer, shp, r->batch,
                r->median_us, r->min_us, r->gflops, r->weight_gbs, r->max_rel_err, r->cpu_share, busy ? " !" : "");
    }
    if (contended) {
        fprintf(stderr, "! %d of %d records got less than 90%% of %d cores (other load on these cores):"
                        " their times are not usable, rerun on a quiet machine\n",
                contended, n_records, o.threads);
    }

    ggml_quantize_free();
    ggml_backend_free(backend);
    ggml_threadpool_free(tp);
    return 0;
}
