/*
 * libcuda_stub.c - a fake CUDA driver library for machines without a GPU.
 *
 * The Rust CUDA layer dlopen()s the library named by TOMODIFF_LIBCUDA and
 * resolves driver entry points with dlsym(). Tests build this file into a
 * shared object, point TOMODIFF_LIBCUDA at it and so run the real driver code
 * paths (init, device queries, memory, modules, launches, stream capture,
 * events, sticky errors) without a GPU. Kernels never run: device memory is
 * host memory, copies and memsets happen synchronously, launches are counted.
 *
 *   cc -shared -fPIC -O1 -Wall -Wextra -o libcuda_stub.so libcuda_stub.c -lpthread
 *   -DTDSTUB_MINIMAL                 an old driver: only cuInit, cuDriverGetVersion,
 *                                    cuGetErrorName/String, cuDeviceGetCount/Get
 *   -DTDSTUB_OMIT_GRAPH_INSTANTIATE  everything but cuGraphInstantiateWithFlags
 *
 * Environment, read once (first cuInit or cuDriverGetVersion):
 *   TDSTUB_DRIVER_VERSION (13000; 12040 minimal)  TDSTUB_INIT_ERROR (cuInit's result)
 *   TDSTUB_DEVICES (1)  TDSTUB_CC ("9.0")  TDSTUB_TOTAL_MEM (80 GiB)  TDSTUB_SMS (132)
 *   TDSTUB_SMEM_OPTIN (232448)  TDSTUB_MEM_LIMIT (bytes; none)
 *   TDSTUB_MODULE_ERROR (cuModuleLoadData's result)  TDSTUB_FUNC_MAX_THREADS (1024)
 *   TDSTUB_FAULT_KERNEL (launching it sets a sticky 700 ILLEGAL_ADDRESS)
 *   TDSTUB_MISSING_FUNCTION (cuModuleGetFunction of that name returns 500 NOT_FOUND)
 *   TDSTUB_REQUIRE_CONTEXT=1 (work on a thread without a current context returns 201)
 * Test hooks: tdstub_count(name), tdstub_last_kernel(), tdstub_reset(). State is
 * per process: a test that triggers the sticky fault poisons later ones unless
 * it calls tdstub_reset() or runs in its own process.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define API __attribute__((visibility("default")))

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct ctx *CUcontext;
typedef struct module *CUmodule;
typedef struct func *CUfunction;
typedef struct stream *CUstream;
typedef struct event *CUevent;
typedef struct graph *CUgraph, *CUgraphExec;

enum {
    OK = 0, E_INVALID_VALUE = 1, E_OOM = 2, E_NOT_INIT = 3, E_INVALID_DEVICE = 101,
    E_INVALID_IMAGE = 200, E_INVALID_CONTEXT = 201, E_INVALID_HANDLE = 400, E_NOT_FOUND = 500,
    E_ILLEGAL_ADDRESS = 700, E_CAPTURE_UNSUPPORTED = 900, E_CAPTURE_INVALIDATED = 901,
};

#define MAX_DEVICES 16
#ifdef TDSTUB_MINIMAL
#define DEFAULT_VERSION 12040
#else
#define DEFAULT_VERSION 13000
#endif

/* Defines the exported driver function `name`; the body that follows runs under the lock. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
#define DRIVER(name, params, args)                                                             \
    static CUresult name##_locked params;                                                     \
    API CUresult name params {                                                                \
        pthread_mutex_lock(&mu);                                                              \
        CUresult r = name##_locked args;                                                      \
        pthread_mutex_unlock(&mu);                                                            \
        return r;                                                                             \
    }                                                                                         \
    static CUresult name##_locked params
#define NEED_INIT() do { if (!cfg.initialized) return E_NOT_INIT; } while (0)

static struct {
    int loaded, initialized, init_error, version, devices, cc_major, cc_minor, sms;
    int smem_optin, func_max_threads, module_error, require_ctx;
    long long total_mem, mem_limit; /* mem_limit < 0: none */
    char fault_kernel[256], missing_function[256];
} cfg;

static long long env_ll(const char *name, long long def) {
    const char *s = getenv(name);
    char *end;
    if (!s || !*s) return def;
    long long v = strtoll(s, &end, 0);
    return end == s ? def : v;
}

static void load_config(void) { /* caller holds mu */
    if (cfg.loaded) return;
    cfg.loaded = 1;
    cfg.version = (int)env_ll("TDSTUB_DRIVER_VERSION", DEFAULT_VERSION);
    cfg.init_error = (int)env_ll("TDSTUB_INIT_ERROR", 0);
    cfg.devices = (int)env_ll("TDSTUB_DEVICES", 1);
    cfg.devices = cfg.devices < 0 ? 0 : cfg.devices > MAX_DEVICES ? MAX_DEVICES : cfg.devices;
    const char *cc = getenv("TDSTUB_CC");
    if (!cc || sscanf(cc, "%d.%d", &cfg.cc_major, &cfg.cc_minor) != 2) cfg.cc_major = 9, cfg.cc_minor = 0;
    cfg.total_mem = env_ll("TDSTUB_TOTAL_MEM", 80LL << 30);
    cfg.mem_limit = env_ll("TDSTUB_MEM_LIMIT", -1);
    cfg.sms = (int)env_ll("TDSTUB_SMS", 132);
    cfg.smem_optin = (int)env_ll("TDSTUB_SMEM_OPTIN", 232448);
    cfg.func_max_threads = (int)env_ll("TDSTUB_FUNC_MAX_THREADS", 1024);
    cfg.module_error = (int)env_ll("TDSTUB_MODULE_ERROR", 0);
    cfg.require_ctx = (int)env_ll("TDSTUB_REQUIRE_CONTEXT", 0);
    const char *s = getenv("TDSTUB_FAULT_KERNEL");
    snprintf(cfg.fault_kernel, sizeof cfg.fault_kernel, "%s", s ? s : "");
    s = getenv("TDSTUB_MISSING_FUNCTION");
    snprintf(cfg.missing_function, sizeof cfg.missing_function, "%s", s ? s : "");
}

/* ---- always exported: init, version, errors, device enumeration ---- */

static const struct { int code; const char *name, *desc; } errors[] = {
    {0, "CUDA_SUCCESS", "no error"},
    {1, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {2, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {3, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {4, "CUDA_ERROR_DEINITIALIZED", "driver shutting down"},
    {100, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {101, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {200, "CUDA_ERROR_INVALID_IMAGE", "device kernel image is invalid"},
    {201, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {209, "CUDA_ERROR_NO_BINARY_FOR_GPU", "no kernel image is available for execution on the device"},
    {218, "CUDA_ERROR_INVALID_PTX", "a PTX JIT compilation failed"},
    {222, "CUDA_ERROR_UNSUPPORTED_PTX_VERSION", "the provided PTX was compiled with an unsupported toolchain."},
    {400, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {500, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {600, "CUDA_ERROR_NOT_READY", "device not ready"},
    {700, "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"},
    {701, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", "too many resources requested for launch"},
    {719, "CUDA_ERROR_LAUNCH_FAILED", "unspecified launch failure"},
    {801, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported"},
    {900, "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED", "operation not permitted when stream is capturing"},
    {901, "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED", "operation failed due to a previous error during capture"},
    {999, "CUDA_ERROR_UNKNOWN", "unknown error"}, /* last: the answer for unknown codes */
};

/* Unknown codes get the CUDA_ERROR_UNKNOWN text and return INVALID_VALUE, as the driver does. */
static CUresult error_text(CUresult e, const char **out, int desc) {
    size_t i, n = sizeof errors / sizeof errors[0];
    if (!out) return E_INVALID_VALUE;
    for (i = 0; i < n - 1 && errors[i].code != e; i++) {}
    *out = desc ? errors[i].desc : errors[i].name;
    return errors[i].code == e ? OK : E_INVALID_VALUE;
}
API CUresult cuGetErrorName(CUresult e, const char **s) { return error_text(e, s, 0); }
API CUresult cuGetErrorString(CUresult e, const char **s) { return error_text(e, s, 1); }

DRIVER(cuInit, (unsigned flags), (flags)) {
    load_config();
    if (flags) return E_INVALID_VALUE;
    if (cfg.init_error) return cfg.init_error;
    cfg.initialized = 1;
    return OK;
}

DRIVER(cuDriverGetVersion, (int *v), (v)) {
    load_config();
    if (!v) return E_INVALID_VALUE;
    *v = cfg.version;
    return OK;
}

DRIVER(cuDeviceGetCount, (int *n), (n)) {
    NEED_INIT();
    if (!n) return E_INVALID_VALUE;
    *n = cfg.devices;
    return OK;
}

DRIVER(cuDeviceGet, (CUdevice *d, int ordinal), (d, ordinal)) {
    NEED_INIT();
    if (!d) return E_INVALID_VALUE;
    if (ordinal < 0 || ordinal >= cfg.devices) return E_INVALID_DEVICE;
    *d = ordinal;
    return OK;
}

#ifndef TDSTUB_MINIMAL
/* ---- the rest of the driver ---- */

#define ALIGN 256
#define NEED_DEV(d) do { NEED_INIT(); if ((d) < 0 || (d) >= cfg.devices) return E_INVALID_DEVICE; } while (0)
#define NEED_CTX() do { NEED_INIT(); if (cfg.require_ctx && !current) return E_INVALID_CONTEXT; } while (0)
#define FAULT() do { if (st.fault) return st.fault; } while (0)
#define DPTR(p) ((void *)(uintptr_t)(p))

struct ctx { int refs; };
struct block { struct block *next; size_t size; }; /* header; the data starts ALIGN bytes in */
struct func { struct func *next; char *name; int max_dyn_smem; };
struct module { struct func *funcs; };
struct stream { int capturing, invalidated, faulty; long long ops; };
struct graph { int faulty; long long ops; }; /* also the instantiated graph */
struct event { unsigned flags; int recorded; struct timespec ts; };

static struct ctx ctxs[MAX_DEVICES]; /* primary contexts */
static __thread CUcontext current;
static struct block *blocks;         /* live allocations */
static struct {
    long long launches, memsets, memcpys, allocs, frees, module_loads, graph_launches;
    long long captured_launches, captured_ops, bytes_allocated, live_allocs;
    int capturing, fault;
    char last_kernel[256];
} st;

DRIVER(cuDeviceGetName, (char *name, int len, CUdevice d), (name, len, d)) {
    NEED_DEV(d);
    if (!name || len <= 0) return E_INVALID_VALUE;
    snprintf(name, (size_t)len, "tomodiff stub GPU");
    return OK;
}

DRIVER(cuDeviceTotalMem_v2, (size_t *bytes, CUdevice d), (bytes, d)) {
    NEED_DEV(d);
    if (!bytes) return E_INVALID_VALUE;
    *bytes = (size_t)cfg.total_mem;
    return OK;
}

DRIVER(cuDeviceGetAttribute, (int *v, int attr, CUdevice d), (v, attr, d)) {
    NEED_DEV(d);
    if (!v) return E_INVALID_VALUE;
    switch (attr) {
    case 1: *v = 1024; break;            /* MAX_THREADS_PER_BLOCK */
    case 8: *v = 49152; break;           /* MAX_SHARED_MEMORY_PER_BLOCK */
    case 12: case 82: *v = 65536; break; /* MAX_REGISTERS_PER_BLOCK / _PER_MULTIPROCESSOR */
    case 16: *v = cfg.sms; break;        /* MULTIPROCESSOR_COUNT */
    case 75: *v = cfg.cc_major; break;   /* COMPUTE_CAPABILITY_MAJOR */
    case 76: *v = cfg.cc_minor; break;   /* COMPUTE_CAPABILITY_MINOR */
    case 81: *v = 233472; break;         /* MAX_SHARED_MEMORY_PER_MULTIPROCESSOR */
    case 97: *v = cfg.smem_optin; break; /* MAX_SHARED_MEMORY_PER_BLOCK_OPTIN */
    default: *v = 0;
    }
    return OK;
}

DRIVER(cuDevicePrimaryCtxRetain, (CUcontext *c, CUdevice d), (c, d)) {
    NEED_DEV(d);
    if (!c) return E_INVALID_VALUE;
    ctxs[d].refs++;
    *c = &ctxs[d];
    return OK;
}

DRIVER(cuDevicePrimaryCtxRelease_v2, (CUdevice d), (d)) {
    NEED_DEV(d);
    if (ctxs[d].refs <= 0) return E_INVALID_CONTEXT;
    ctxs[d].refs--;
    return OK;
}

DRIVER(cuCtxSetCurrent, (CUcontext c), (c)) {
    NEED_INIT();
    if (c && (c < ctxs || c >= ctxs + cfg.devices)) return E_INVALID_CONTEXT;
    current = c;
    return OK;
}

DRIVER(cuCtxSynchronize, (void), ()) { NEED_CTX(); FAULT(); return OK; }

/* ---- streams, capture and graphs ---- */

DRIVER(cuStreamCreate, (CUstream *s, unsigned flags), (s, flags)) {
    NEED_CTX();
    (void)flags;
    if (!s) return E_INVALID_VALUE;
    return (*s = calloc(1, sizeof **s)) ? OK : E_OOM;
}

DRIVER(cuStreamDestroy_v2, (CUstream s), (s)) {
    NEED_CTX();
    if (!s) return E_INVALID_HANDLE;
    st.capturing -= s->capturing;
    free(s);
    return OK;
}

/* Synchronizing a capturing stream is illegal and invalidates the capture, as on a GPU. */
DRIVER(cuStreamSynchronize, (CUstream s), (s)) {
    NEED_CTX();
    FAULT();
    if (s && s->capturing) {
        s->invalidated = 1;
        return E_CAPTURE_UNSUPPORTED;
    }
    return OK;
}

DRIVER(cuStreamBeginCapture_v2, (CUstream s, int mode), (s, mode)) {
    NEED_CTX();
    (void)mode;
    if (!s || s->capturing) return E_CAPTURE_UNSUPPORTED; /* the legacy stream, or nested */
    *s = (struct stream){.capturing = 1};
    st.capturing++;
    return OK;
}

DRIVER(cuStreamEndCapture, (CUstream s, CUgraph *g), (s, g)) {
    NEED_CTX();
    if (!g) return E_INVALID_VALUE;
    *g = NULL;
    if (!s || !s->capturing) return E_INVALID_VALUE;
    int invalidated = s->invalidated;
    struct graph rec = {.faulty = s->faulty, .ops = s->ops};
    *s = (struct stream){0};
    st.capturing--;
    if (invalidated) return E_CAPTURE_INVALIDATED;
    if (!(*g = malloc(sizeof **g))) return E_OOM;
    **g = rec;
    return OK;
}

DRIVER(cuStreamIsCapturing, (CUstream s, int *status), (s, status)) {
    NEED_CTX();
    if (!status) return E_INVALID_VALUE;
    *status = !s || !s->capturing ? 0 : s->invalidated ? 2 : 1;
    return OK;
}

/* Work on a capturing stream is recorded, not run: 1 when captured (r: 901 after invalidation). */
static int captured(CUstream s, CUresult *r) {
    if (!s || !s->capturing) return 0;
    *r = s->invalidated ? E_CAPTURE_INVALIDATED : OK;
    if (!s->invalidated) s->ops++, st.captured_ops++;
    return 1;
}

#ifndef TDSTUB_OMIT_GRAPH_INSTANTIATE
DRIVER(cuGraphInstantiateWithFlags, (CUgraphExec *e, CUgraph g, unsigned long long flags), (e, g, flags)) {
    NEED_CTX();
    (void)flags;
    if (!e || !g) return E_INVALID_VALUE;
    if (!(*e = malloc(sizeof **e))) return E_OOM;
    **e = *g;
    return OK;
}
#endif

/* A graph that captured a launch of TDSTUB_FAULT_KERNEL faults when replayed. */
DRIVER(cuGraphLaunch, (CUgraphExec e, CUstream s), (e, s)) {
    NEED_CTX();
    FAULT();
    if (!e) return E_INVALID_HANDLE;
    if (s && s->capturing) return E_CAPTURE_UNSUPPORTED;
    st.graph_launches++;
    if (e->faulty) st.fault = E_ILLEGAL_ADDRESS;
    return OK;
}

DRIVER(cuGraphDestroy, (CUgraph g), (g)) { NEED_INIT(); if (!g) return E_INVALID_HANDLE; free(g); return OK; }
DRIVER(cuGraphExecDestroy, (CUgraphExec e), (e)) { NEED_INIT(); if (!e) return E_INVALID_HANDLE; free(e); return OK; }

/* ---- memory: device pointers are 256-byte aligned host pointers ---- */

/* Whether [p, p + n) lies in a live allocation: device accesses outside one fail with 1. */
static int in_block(CUdeviceptr p, size_t n) {
    for (struct block *b = blocks; b; b = b->next) {
        uintptr_t lo = (uintptr_t)b + ALIGN;
        if (p >= lo && p <= lo + b->size && n <= lo + b->size - p) return 1;
    }
    return 0;
}

DRIVER(cuMemAlloc_v2, (CUdeviceptr *dp, size_t n), (dp, n)) {
    NEED_CTX();
    if (!dp || n == 0) return E_INVALID_VALUE;
    if (n > SIZE_MAX / 2) return E_OOM;
    if (cfg.mem_limit >= 0 && (unsigned long long)st.bytes_allocated + n > (unsigned long long)cfg.mem_limit)
        return E_OOM;
    struct block *b = aligned_alloc(ALIGN, ALIGN + (n + ALIGN - 1) / ALIGN * ALIGN);
    if (!b) return E_OOM;
    *b = (struct block){.next = blocks, .size = n};
    blocks = b;
    memset((char *)b + ALIGN, 0xAB, n); /* never zeroed, to catch code that assumes it is */
    st.allocs++, st.live_allocs++, st.bytes_allocated += (long long)n;
    *dp = (CUdeviceptr)(uintptr_t)b + ALIGN;
    return OK;
}

DRIVER(cuMemFree_v2, (CUdeviceptr p), (p)) {
    NEED_CTX();
    for (struct block **pp = &blocks; *pp; pp = &(*pp)->next) {
        struct block *b = *pp;
        if ((uintptr_t)b + ALIGN != p) continue;
        *pp = b->next;
        st.frees++, st.live_allocs--, st.bytes_allocated -= (long long)b->size;
        free(b);
        return OK;
    }
    return E_INVALID_VALUE; /* not a live allocation: a double or interior free */
}

DRIVER(cuMemGetInfo_v2, (size_t *free_b, size_t *total), (free_b, total)) {
    NEED_CTX();
    if (!free_b || !total) return E_INVALID_VALUE;
    *total = (size_t)cfg.total_mem;
    *free_b = st.bytes_allocated < cfg.total_mem ? (size_t)(cfg.total_mem - st.bytes_allocated) : 0;
    return OK;
}

DRIVER(cuMemsetD8Async, (CUdeviceptr d, unsigned char v, size_t n, CUstream s), (d, v, n, s)) {
    NEED_CTX();
    CUresult r;
    if (!in_block(d, n)) return E_INVALID_VALUE;
    if (captured(s, &r)) return r;
    memset(DPTR(d), v, n);
    st.memsets++;
    return OK;
}

/* kind: 0 HtoD, 1 DtoH, 2 DtoD. Host<->device copies cannot be captured: they invalidate. */
static CUresult copy(void *dst, const void *src, size_t n, int kind, CUstream s) {
    NEED_CTX();
    CUresult r;
    if (kind == 1) FAULT();
    if ((kind != 1 && !in_block((uintptr_t)dst, n)) || (kind != 0 && !in_block((uintptr_t)src, n)) ||
        (n && (!dst || !src)))
        return E_INVALID_VALUE;
    if (kind != 2 && s && s->capturing) {
        s->invalidated = 1;
        return E_CAPTURE_INVALIDATED;
    }
    if (captured(s, &r)) return r;
    if (n) memmove(dst, src, n);
    st.memcpys++;
    return OK;
}
DRIVER(cuMemcpyHtoDAsync_v2, (CUdeviceptr d, const void *h, size_t n, CUstream s), (d, h, n, s)) {
    return copy(DPTR(d), h, n, 0, s);
}
DRIVER(cuMemcpyDtoHAsync_v2, (void *h, CUdeviceptr d, size_t n, CUstream s), (h, d, n, s)) {
    return copy(h, DPTR(d), n, 1, s);
}
DRIVER(cuMemcpyDtoDAsync_v2, (CUdeviceptr d, CUdeviceptr src, size_t n, CUstream s), (d, src, n, s)) {
    return copy(DPTR(d), DPTR(src), n, 2, s);
}

/* ---- modules and functions ---- */

DRIVER(cuModuleLoadData, (CUmodule *m, const void *image), (m, image)) {
    NEED_CTX();
    if (!m || !image) return E_INVALID_VALUE;
    if (cfg.module_error) return cfg.module_error;
    const unsigned char *p = image;
    size_t n = strnlen(image, 4096); /* the magics hold no NUL; PTX text is NUL-terminated */
    int fatbin = n >= 4 && p[0] == 0x50 && p[1] == 0xED && p[2] == 0x55 && p[3] == 0xBA;
    int elf = n >= 4 && !memcmp(p, "\x7f" "ELF", 4);
    if (!fatbin && !elf && !memmem(p, n, ".version", 8)) return E_INVALID_IMAGE;
    if (!(*m = calloc(1, sizeof **m))) return E_OOM;
    st.module_loads++;
    return OK;
}

DRIVER(cuModuleUnload, (CUmodule m), (m)) {
    NEED_CTX();
    if (!m) return E_INVALID_HANDLE;
    for (struct func *f = m->funcs, *next; f; f = next) {
        next = f->next;
        free(f->name);
        free(f);
    }
    free(m);
    return OK;
}

DRIVER(cuModuleGetFunction, (CUfunction *out, CUmodule m, const char *name), (out, m, name)) {
    NEED_CTX();
    if (!out || !name) return E_INVALID_VALUE;
    if (!m) return E_INVALID_HANDLE;
    if (!strcmp(name, cfg.missing_function)) return E_NOT_FOUND;
    struct func *f = calloc(1, sizeof *f);
    if (!f || !(f->name = strdup(name))) return free(f), E_OOM;
    f->max_dyn_smem = 49152; /* 48 KiB minus the static shared memory, which is none */
    f->next = m->funcs;
    m->funcs = *out = f;
    return OK;
}

DRIVER(cuFuncGetAttribute, (int *v, int attr, CUfunction f), (v, attr, f)) {
    NEED_CTX();
    if (!v) return E_INVALID_VALUE;
    if (!f) return E_INVALID_HANDLE;
    switch (attr) {
    case 0: *v = cfg.func_max_threads; break;             /* MAX_THREADS_PER_BLOCK */
    case 4: *v = 32; break;                               /* NUM_REGS */
    case 5: *v = 80; break;                               /* PTX_VERSION */
    case 6: *v = cfg.cc_major * 10 + cfg.cc_minor; break; /* BINARY_VERSION */
    case 8: *v = f->max_dyn_smem; break;                  /* MAX_DYNAMIC_SHARED_SIZE_BYTES */
    default: *v = 0;                                      /* shared/const/local sizes, ... */
    }
    return OK;
}

DRIVER(cuFuncSetAttribute, (CUfunction f, int attr, int v), (f, attr, v)) {
    NEED_CTX();
    if (!f) return E_INVALID_HANDLE;
    if (attr >= 0 && attr <= 7) return E_INVALID_VALUE; /* read-only */
    if (attr == 8) {
        if (v < 0 || v > cfg.smem_optin) return E_INVALID_VALUE;
        f->max_dyn_smem = v;
    }
    return OK;
}

DRIVER(cuLaunchKernel,
       (CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
        unsigned smem, CUstream s, void **params, void **extra),
       (f, gx, gy, gz, bx, by, bz, smem, s, params, extra)) {
    NEED_CTX();
    FAULT();
    (void)params, (void)extra;
    if (!f) return E_INVALID_HANDLE;
    if (!gx || !gy || !gz || !bx || !by || !bz || gx > 0x7fffffffu || gy > 65535 || gz > 65535 || bz > 64)
        return E_INVALID_VALUE;
    if ((unsigned long long)bx * by * bz > (unsigned long long)cfg.func_max_threads ||
        smem > (unsigned)f->max_dyn_smem)
        return E_INVALID_VALUE;
    int faulty = cfg.fault_kernel[0] && !strcmp(cfg.fault_kernel, f->name);
    CUresult r;
    snprintf(st.last_kernel, sizeof st.last_kernel, "%s", f->name);
    if (captured(s, &r)) {
        if (r == OK) st.captured_launches++, s->faulty |= faulty;
        return r;
    }
    st.launches++;
    if (faulty) st.fault = E_ILLEGAL_ADDRESS; /* asynchronous: this launch itself succeeds */
    return OK;
}

/* ---- events ---- */

DRIVER(cuEventCreate, (CUevent *e, unsigned flags), (e, flags)) {
    NEED_CTX();
    if (!e) return E_INVALID_VALUE;
    if (!(*e = calloc(1, sizeof **e))) return E_OOM;
    (*e)->flags = flags;
    return OK;
}

DRIVER(cuEventRecord, (CUevent e, CUstream s), (e, s)) {
    NEED_CTX();
    (void)s;
    if (!e) return E_INVALID_HANDLE;
    clock_gettime(CLOCK_MONOTONIC, &e->ts);
    e->recorded = 1;
    return OK;
}

DRIVER(cuEventSynchronize, (CUevent e), (e)) { NEED_CTX(); FAULT(); return e ? OK : E_INVALID_HANDLE; }

/* Unrecorded events, or ones made with CU_EVENT_DISABLE_TIMING (2), give INVALID_HANDLE. */
DRIVER(cuEventElapsedTime, (float *ms, CUevent a, CUevent b), (ms, a, b)) {
    NEED_CTX();
    if (!ms) return E_INVALID_VALUE;
    if (!a || !b || !a->recorded || !b->recorded || ((a->flags | b->flags) & 2)) return E_INVALID_HANDLE;
    *ms = (float)((double)(b->ts.tv_sec - a->ts.tv_sec) * 1e3 + (double)(b->ts.tv_nsec - a->ts.tv_nsec) / 1e6);
    return OK;
}

DRIVER(cuEventDestroy_v2, (CUevent e), (e)) { NEED_CTX(); if (!e) return E_INVALID_HANDLE; free(e); return OK; }

/* ---- test hooks ---- */

/* A counter by name, or -1 for an unknown name. */
API long long tdstub_count(const char *what) {
    static const struct { const char *name; long long *v; } counters[] = {
        {"launches", &st.launches}, {"memsets", &st.memsets}, {"memcpys", &st.memcpys},
        {"allocs", &st.allocs}, {"frees", &st.frees}, {"module_loads", &st.module_loads},
        {"graph_launches", &st.graph_launches}, {"captured_launches", &st.captured_launches},
        {"captured_ops", &st.captured_ops}, {"bytes_allocated", &st.bytes_allocated},
        {"live_allocs", &st.live_allocs},
    };
    long long v = -1;
    pthread_mutex_lock(&mu);
    if (!what) {
    } else if (!strcmp(what, "capturing")) {
        v = st.capturing > 0;
    } else if (!strcmp(what, "fault")) {
        v = st.fault;
    } else if (!strcmp(what, "contexts")) { /* primary context references held */
        v = 0;
        for (int i = 0; i < MAX_DEVICES; i++) v += ctxs[i].refs;
    } else {
        for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++)
            if (!strcmp(what, counters[i].name)) v = *counters[i].v;
    }
    pthread_mutex_unlock(&mu);
    return v;
}

/* The name of the last kernel launched or captured ("" if none), in a per-thread buffer. */
API const char *tdstub_last_kernel(void) {
    static __thread char name[sizeof st.last_kernel];
    pthread_mutex_lock(&mu);
    memcpy(name, st.last_kernel, sizeof name);
    pthread_mutex_unlock(&mu);
    return name;
}

/* Clears the sticky fault and the event counters; allocations, streams and captures stay. */
API void tdstub_reset(void) {
    pthread_mutex_lock(&mu);
    st.fault = 0;
    st.launches = st.memsets = st.memcpys = st.allocs = st.frees = st.module_loads = 0;
    st.graph_launches = st.captured_launches = st.captured_ops = 0;
    pthread_mutex_unlock(&mu);
}
#endif /* !TDSTUB_MINIMAL */
