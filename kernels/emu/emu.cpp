// Runtime of the CUDA emulator: fibers, the block scheduler, barriers, and the launch entry that
// Rust calls. See emu.h for the model.
#include "emu.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

namespace emu {

Thread* cur = nullptr;
uint3 block_idx;
dim3 block_dim;
dim3 grid_dim;
Warp* warps = nullptr;
unsigned char* dyn_smem = nullptr;

// ---- context switch ----
// x86-64 System V: save the callee-saved registers and the FP control words on the old stack,
// swap stack pointers, restore from the new one. Far cheaper than swapcontext, which makes a
// system call per switch; barrier-heavy kernels switch millions of times.
#if defined(__x86_64__) && !defined(TOMODIFF_EMU_UCONTEXT)
extern "C" void tomodiff_emu_switch(void** save_sp, void* load_sp);
extern "C" void tomodiff_emu_entry();
asm(R"(
.text
.globl tomodiff_emu_switch
.type tomodiff_emu_switch,@function
tomodiff_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
.size tomodiff_emu_switch,.-tomodiff_emu_switch
.globl tomodiff_emu_entry
.type tomodiff_emu_entry,@function
tomodiff_emu_entry:
    movq %r12, %rdi
    callq *%r13
    ud2
.size tomodiff_emu_entry,.-tomodiff_emu_entry
)");
struct Context {
    void* sp = nullptr;
};
static void ctx_make(Context& c, unsigned char* stack_top, void (*fn)(void*), void* arg) {
    uintptr_t top = reinterpret_cast<uintptr_t>(stack_top) & ~uintptr_t(15);
    uint64_t* s = reinterpret_cast<uint64_t*>(top);
    uint32_t mxcsr = 0;
    uint16_t fpucw = 0;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpucw));
    s[-1] = reinterpret_cast<uint64_t>(&tomodiff_emu_entry);  // ret target
    s[-2] = 0;                                                // rbp
    s[-3] = 0;                                                // rbx
    s[-4] = reinterpret_cast<uint64_t>(arg);                  // r12
    s[-5] = reinterpret_cast<uint64_t>(fn);                   // r13
    s[-6] = 0;                                                // r14
    s[-7] = 0;                                                // r15
    s[-8] = (uint64_t)mxcsr | ((uint64_t)fpucw << 32);
    c.sp = &s[-8];
}
static void ctx_switch(Context& from, Context& to) { tomodiff_emu_switch(&from.sp, to.sp); }
#else
#include <ucontext.h>
struct Context {
    ucontext_t uc;
};
static void (*g_entry_fn)(void*);
static void* g_entry_arg;
static void ctx_entry_shim() { g_entry_fn(g_entry_arg); }
static void ctx_make(Context& c, unsigned char* stack_top, void (*fn)(void*), void* arg, size_t size);
static void ctx_switch(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

constexpr size_t kStack = 256 * 1024;
constexpr size_t kGuard = 4096;

enum State { kRun, kWaitBlock, kWaitWarp, kDone };

struct Fiber {
    Context ctx;
    Thread t;
    State state;
    unsigned wait_gen;
};

static Context g_sched;
static std::vector<Fiber> g_fibers;
static Fiber* g_cur_fiber = nullptr;
static unsigned char* g_stacks = nullptr;
static size_t g_stacks_n = 0;
static std::vector<Warp> g_warps;
static std::vector<unsigned char> g_smem;
static Trampoline g_kernel = nullptr;
static void** g_args = nullptr;

struct BlockBarrier {
    unsigned arrived, gen, live;
} g_block;

static unsigned char* stack_top(size_t i) { return g_stacks + (i + 1) * (kStack + kGuard); }

static bool ensure_stacks(size_t n) {
    if (g_stacks_n >= n) return true;
    if (g_stacks) munmap(g_stacks, g_stacks_n * (kStack + kGuard));
    size_t bytes = n * (kStack + kGuard);
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        g_stacks = nullptr;
        g_stacks_n = 0;
        return false;
    }
    g_stacks = static_cast<unsigned char*>(p);
    g_stacks_n = n;
    // A guard page below each stack turns a fiber's stack overflow into a fault, not corruption.
    for (size_t i = 0; i < n; i++) mprotect(g_stacks + i * (kStack + kGuard), kGuard, PROT_NONE);
    return true;
}

#if !(defined(__x86_64__) && !defined(TOMODIFF_EMU_UCONTEXT))
static void ctx_make(Context& c, unsigned char* top, void (*fn)(void*), void* arg, size_t size) {
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = top - size;
    c.uc.uc_stack.ss_size = size;
    c.uc.uc_link = nullptr;
    g_entry_fn = fn;
    g_entry_arg = arg;
    makecontext(&c.uc, ctx_entry_shim, 0);
}
#endif

static void yield_to_scheduler() { ctx_switch(g_cur_fiber->ctx, g_sched); }

static void complete_warp_if_ready(Warp& w) {
    if (w.arrived > 0 && w.arrived >= (unsigned)__builtin_popcount(w.live)) {
        w.arrived = 0;
        w.gen++;
    }
}

void syncthreads() {
    g_block.arrived++;
    if (g_block.arrived >= g_block.live) {
        g_block.arrived = 0;
        g_block.gen++;
        return;
    }
    g_cur_fiber->state = kWaitBlock;
    g_cur_fiber->wait_gen = g_block.gen;
    yield_to_scheduler();
}

void warp_barrier(unsigned mask) {
    Warp& w = warps[cur->warp];
    unsigned need = (unsigned)__builtin_popcount(mask & w.live);
    w.arrived++;
    if (w.arrived >= need) {
        w.arrived = 0;
        w.gen++;
        return;
    }
    g_cur_fiber->state = kWaitWarp;
    g_cur_fiber->wait_gen = w.gen;
    yield_to_scheduler();
}

static void fiber_main(void* arg) {
    Fiber* f = static_cast<Fiber*>(arg);
    g_kernel(g_args);
    // An exited thread no longer counts toward barriers; it may be the one others wait for.
    f->state = kDone;
    g_block.live--;
    if (g_block.arrived > 0 && g_block.arrived >= g_block.live) {
        g_block.arrived = 0;
        g_block.gen++;
    }
    Warp& w = g_warps[f->t.warp];
    w.live &= ~(1u << f->t.lane);
    complete_warp_if_ready(w);
    ctx_switch(f->ctx, g_sched);
    std::abort();  // a finished fiber is never resumed
}

static bool blocked(const Fiber& f) {
    if (f.state == kWaitBlock) return g_block.gen == f.wait_gen;
    if (f.state == kWaitWarp) return g_warps[f.t.warp].gen == f.wait_gen;
    return false;
}

// Runs one block to completion. Returns false when live threads all wait on barriers that can
// never complete (a barrier inside divergent code).
static bool run_block(unsigned nthreads) {
    unsigned nwarps = (nthreads + kWarp - 1) / kWarp;
    for (unsigned i = 0; i < nwarps; i++) {
        Warp& w = g_warps[i];
        unsigned lanes = (i + 1 < nwarps || nthreads % kWarp == 0) ? kWarp : nthreads % kWarp;
        w.arrived = 0;
        w.gen = 0;
        w.live = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1);
    }
    g_block = {0, 0, nthreads};
    for (unsigned i = 0; i < nthreads; i++) {
        Fiber& f = g_fibers[i];
        f.t.tid = {i % block_dim.x, (i / block_dim.x) % block_dim.y, i / (block_dim.x * block_dim.y)};
        f.t.lane = (int)(i % kWarp);
        f.t.warp = (int)(i / kWarp);
        f.t.parity[0] = 0;
        f.state = kRun;
#if defined(__x86_64__) && !defined(TOMODIFF_EMU_UCONTEXT)
        ctx_make(f.ctx, stack_top(i), fiber_main, &f);
#else
        ctx_make(f.ctx, stack_top(i), fiber_main, &f, kStack);
#endif
    }
    for (;;) {
        bool resumed = false, all_done = true;
        for (unsigned i = 0; i < nthreads; i++) {
            Fiber& f = g_fibers[i];
            if (f.state == kDone) continue;
            all_done = false;
            if (blocked(f)) continue;
            f.state = kRun;
            g_cur_fiber = &f;
            cur = &f.t;
            ctx_switch(g_sched, f.ctx);
            resumed = true;
        }
        if (all_done) return true;
        if (!resumed) return false;
    }
}

uint16_t f32_to_f16(float f) {
    uint32_t u = __float_as_uint(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // rounds to >= 65520: infinity
    if (a < 0x38800000u) {                                    // result is subnormal or zero
        if (a < 0x33000000u) return (uint16_t)sign;            // below half the smallest subnormal
        uint32_t mant = (a & 0x7fffffu) | 0x800000u;
        int shift = 126 - (int)(a >> 23);                      // 14..24
        uint32_t q = mant >> (shift);
        uint32_t rem = mant & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t h = ((a - 0x38000000u) >> 13);
    uint32_t rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ffu;
    if (e == 0) {
        float v = std::ldexp((float)m, -24);
        return sign ? -v : v;
    }
    if (e == 31) return __uint_as_float(sign | 0x7f800000u | (m << 13));
    return __uint_as_float(sign | ((e + 112) << 23) | (m << 13));
}

}  // namespace emu

extern "C" {
extern const emu::Trampoline tomodiff_emu_kernels[];
extern const unsigned tomodiff_emu_kernel_count;

// Error codes shared with src/device/emu.rs.
enum { kOk = 0, kUnknownKernel = 1, kBadLaunch = 2, kDeadlock = 3, kNoMemory = 4 };

int tomodiff_emu_launch(unsigned kernel, const unsigned* grid, const unsigned* block, unsigned smem_bytes, void** args,
                        unsigned* failed_block) {
    using namespace emu;
    if (kernel >= tomodiff_emu_kernel_count) return kUnknownKernel;
    unsigned nthreads = block[0] * block[1] * block[2];
    if (nthreads == 0 || nthreads > (unsigned)kMaxThreads || grid[0] == 0 || grid[1] == 0 || grid[2] == 0)
        return kBadLaunch;
    if (!ensure_stacks(nthreads)) return kNoMemory;
    if (g_fibers.size() < nthreads) g_fibers.resize(nthreads);
    if (g_warps.size() < (nthreads + kWarp - 1) / kWarp) g_warps.resize((nthreads + kWarp - 1) / kWarp);
    warps = g_warps.data();
    g_smem.assign(smem_bytes + 16, 0);
    uintptr_t aligned = (reinterpret_cast<uintptr_t>(g_smem.data()) + 15) & ~uintptr_t(15);
    dyn_smem = reinterpret_cast<unsigned char*>(aligned);
    block_dim = {block[0], block[1], block[2]};
    grid_dim = {grid[0], grid[1], grid[2]};
    g_kernel = tomodiff_emu_kernels[kernel];
    g_args = args;
    for (unsigned z = 0; z < grid[2]; z++)
        for (unsigned y = 0; y < grid[1]; y++)
            for (unsigned x = 0; x < grid[0]; x++) {
                block_idx = {x, y, z};
                // Poison dynamic shared memory (NaN bytes) so a read before a write shows.
                if (smem_bytes) std::memset(dyn_smem, 0xff, smem_bytes);
                if (!run_block(nthreads)) {
                    failed_block[0] = x;
                    failed_block[1] = y;
                    failed_block[2] = z;
                    return kDeadlock;
                }
            }
    return kOk;
}
}
