//! The CUDA device over the driver API (driver.rs): a primary context, one stream of our own, the
//! caching pool, modules loaded from the embedded fatbins (or NVRTC), and launches checked
//! against the device's and the function's limits before they reach the driver.
use super::driver::{self, attr, driver, CUdevice, CUdeviceptr, Driver, Handle};
use super::pool::{self, Block, MemoryStats, Pool};
use crate::error::{Error, Result};
use crate::kernels::{KERNELS, MODULES};
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

/// Number of CUDA devices, or why there are none (no driver, an old or partial driver, cuInit
/// failing).
pub fn cuda_device_count() -> Result<usize> {
    let d = driver()?;
    let mut n = 0;
    // SAFETY: writes one int.
    d.check(unsafe { (d.api.cuDeviceGetCount)(&mut n) }, "cuDeviceGetCount")?;
    Ok(n.max(0) as usize)
}

/// The driver's API version ("13.0") and library path, or why there is no usable driver.
pub fn driver_version() -> Result<(String, String)> {
    let d = driver()?;
    Ok((driver::version_string(d.version), d.path.clone()))
}

/// The oldest GPUs the kernels run on: bf16 tensor-core mma and cp.async need sm_80.
pub const MIN_COMPUTE_CAPABILITY: (i32, i32) = (8, 0);

/// What the device reports at open; launches are checked against it.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    /// The N of `cuda:N`.
    pub ordinal: usize,
    /// The GPU's name (cuDeviceGetName), e.g. "NVIDIA H200".
    pub name: String,
    /// Device memory in bytes (cuDeviceTotalMem).
    pub total_memory: usize,
    /// (major, minor), e.g. (9, 0) for sm_90.
    pub compute_capability: (i32, i32),
    /// Streaming multiprocessors (CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).
    pub multiprocessors: i32,
    /// Most threads a block may have (CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK).
    pub max_threads_per_block: i32,
    /// 32-bit registers available to a block (CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK).
    pub max_registers_per_block: i32,
    /// Dynamic + static shared memory a block may have once opted in (227 KiB on sm_90,
    /// 163 KiB on sm_80).
    pub max_shared_per_block_optin: i32,
}

/// A loaded kernel and what the compiled code needs.
#[derive(Clone, Copy)]
struct Func {
    handle: Handle,
    max_threads: i32,
    registers: i32,
    static_smem: i32,
    /// Dynamic shared memory the function is opted into (48 KiB less static without opt-in).
    dyn_optin: i32,
}

/// A device address owned by the pool.
struct DevPtr(CUdeviceptr);

impl Block for DevPtr {
    fn addr(&self) -> u64 {
        self.0
    }
}

/// The last launch, named in errors that surface later (faults are reported asynchronously).
#[derive(Clone, Default)]
struct LastLaunch {
    kernel: &'static str,
    grid: [u32; 3],
    block: [u32; 3],
}

/// An open GPU: its primary context, one non-blocking stream that all work is queued on, a
/// caching memory pool, and the kernel modules, loaded on first use. Held as `Arc<CudaDevice>` by
/// [`Device::Cuda`](super::Device::Cuda) and every buffer and graph on it; the last to drop
/// frees the cached memory and releases the context.
pub struct CudaDevice {
    ordinal: usize,
    dev: CUdevice,
    ctx: Handle,
    /// All work goes to one stream of our own: the legacy default stream cannot be captured.
    stream: Handle,
    info: DeviceInfo,
    modules: Mutex<HashMap<usize, Handle>>,
    funcs: Mutex<HashMap<usize, Func>>,
    pool: Mutex<Pool<DevPtr>>,
    /// The thread capturing a graph, if one is: work from other threads is refused meanwhile,
    /// since the stream would record it into the graph.
    capture_owner: Mutex<Option<ThreadId>>,
    last: Mutex<LastLaunch>,
    /// TOMODIFF_SYNC=1: synchronize after every launch to name the kernel that faults.
    sync_each: bool,
}

// SAFETY: the raw handles are driver objects usable from any thread that binds the context
// (bind() before every call); mutable state is behind mutexes.
unsafe impl Send for CudaDevice {}
unsafe impl Sync for CudaDevice {}

fn api() -> &'static Driver {
    driver().expect("a CudaDevice exists only once the driver loaded")
}

impl Drop for CudaDevice {
    fn drop(&mut self) {
        let d = api();
        // Every buffer and graph holds the device, so none is alive here.
        if self.bind().is_ok() && self.synchronize().is_ok() {
            for b in self.pool.get_mut().unwrap_or_else(|e| e.into_inner()).drain() {
                // SAFETY: allocated by cuMemAlloc, owned by the pool, freed once.
                unsafe { (d.api.cuMemFree)(b.0) };
            }
            for (_, m) in self.modules.get_mut().unwrap_or_else(|e| e.into_inner()).drain() {
                // SAFETY: no function of the module can run any more.
                unsafe { (d.api.cuModuleUnload)(m) };
            }
        }
        // SAFETY: the stream and the context reference were made in open(), released once.
        unsafe {
            (d.api.cuStreamDestroy)(self.stream);
            (d.api.cuDevicePrimaryCtxRelease)(self.dev);
        }
    }
}

impl CudaDevice {
    /// Opens device `ordinal`: its primary context, a stream, and what it reports. Fails with
    /// one line naming the cause: no driver, an old driver, no such device, or a GPU older than
    /// [`MIN_COMPUTE_CAPABILITY`].
    pub fn open(ordinal: usize) -> Result<Arc<CudaDevice>> {
        let n = cuda_device_count()?;
        if n == 0 {
            return Err(Error::NoCuda("the driver reports no devices".into()));
        }
        if ordinal >= n {
            return Err(Error::NoCuda(format!("device cuda:{ordinal} requested, {n} found")));
        }
        let d = driver()?;
        let mut dev = 0;
        // SAFETY: out-pointers to locals; ordinal < count.
        d.check(unsafe { (d.api.cuDeviceGet)(&mut dev, ordinal as i32) }, "cuDeviceGet")?;
        let attr = |a| {
            let mut v = 0;
            // SAFETY: writes one int for a valid device.
            d.check(unsafe { (d.api.cuDeviceGetAttribute)(&mut v, a, dev) }, "cuDeviceGetAttribute").map(|_| v)
        };
        let mut name = [0u8; 256];
        // SAFETY: the buffer holds 256 bytes; the driver NUL-terminates.
        d.check(unsafe { (d.api.cuDeviceGetName)(name.as_mut_ptr() as *mut _, 256, dev) }, "cuDeviceGetName")?;
        let name = String::from_utf8_lossy(name.split(|&b| b == 0).next().unwrap_or(&[])).into_owned();
        let mut total_memory = 0;
        // SAFETY: writes one size_t.
        d.check(unsafe { (d.api.cuDeviceTotalMem)(&mut total_memory, dev) }, "cuDeviceTotalMem")?;
        let info = DeviceInfo {
            ordinal,
            name,
            total_memory,
            compute_capability: (attr(attr::COMPUTE_CAPABILITY_MAJOR)?, attr(attr::COMPUTE_CAPABILITY_MINOR)?),
            multiprocessors: attr(attr::MULTIPROCESSOR_COUNT)?,
            max_threads_per_block: attr(attr::MAX_THREADS_PER_BLOCK)?,
            max_registers_per_block: attr(attr::MAX_REGISTERS_PER_BLOCK)?,
            max_shared_per_block_optin: attr(attr::MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?,
        };
        if info.compute_capability < MIN_COMPUTE_CAPABILITY {
            return Err(Error::NoCuda(format!(
                "cuda:{ordinal} ({}) has compute capability {}.{}; tomodiff's kernels need {}.{} or newer (bf16 tensor-core mma, cp.async)",
                info.name, info.compute_capability.0, info.compute_capability.1, MIN_COMPUTE_CAPABILITY.0, MIN_COMPUTE_CAPABILITY.1
            )));
        }
        let mut ctx = std::ptr::null_mut();
        // SAFETY: out-pointer; released in Drop.
        d.check(unsafe { (d.api.cuDevicePrimaryCtxRetain)(&mut ctx, dev) }, "cuDevicePrimaryCtxRetain")?;
        // SAFETY: a context just retained.
        let bound = d.check(unsafe { (d.api.cuCtxSetCurrent)(ctx) }, "cuCtxSetCurrent");
        let mut stream = std::ptr::null_mut();
        // SAFETY: out-pointer; the context is current.
        let made = bound.and_then(|_| d.check(unsafe { (d.api.cuStreamCreate)(&mut stream, driver::STREAM_NON_BLOCKING) }, "cuStreamCreate"));
        if let Err(e) = made {
            // SAFETY: retained above, released once.
            unsafe { (d.api.cuDevicePrimaryCtxRelease)(dev) };
            return Err(e);
        }
        Ok(Arc::new(CudaDevice {
            ordinal,
            dev,
            ctx,
            stream,
            info,
            modules: Mutex::new(HashMap::new()),
            funcs: Mutex::new(HashMap::new()),
            pool: Mutex::new(Pool::default()),
            capture_owner: Mutex::new(None),
            last: Mutex::new(LastLaunch::default()),
            sync_each: std::env::var("TOMODIFF_SYNC").is_ok_and(|v| v == "1"),
        }))
    }

    /// The N of `cuda:N`.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// What the device reported when it was opened.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    pub(super) fn bind(&self) -> Result<()> {
        // SAFETY: the context is retained for the device's lifetime.
        api().check(unsafe { (api().api.cuCtxSetCurrent)(self.ctx) }, "binding the context")
    }

    /// Free device memory in bytes, now.
    pub fn free_memory(&self) -> Result<usize> {
        self.bind()?;
        let (mut free, mut total) = (0, 0);
        // SAFETY: writes two size_t.
        api().check(unsafe { (api().api.cuMemGetInfo)(&mut free, &mut total) }, "cuMemGetInfo")?;
        Ok(free)
    }

    /// Waits for the stream. A fault of any kernel queued before surfaces here, named with the
    /// last launch (TOMODIFF_SYNC=1 names the faulting one exactly).
    pub fn synchronize(&self) -> Result<()> {
        self.not_capturing("waiting for the device")?;
        self.bind()?;
        // SAFETY: the stream is live.
        let r = unsafe { (api().api.cuStreamSynchronize)(self.stream) };
        self.after_queued_work(r, "synchronize")
    }

    /// An error from work that ran asynchronously, with the last launch named.
    fn after_queued_work(&self, r: driver::CUresult, during: &str) -> Result<()> {
        api().check(r, during).map_err(|e| {
            let last = self.last.lock().unwrap().clone();
            match (e, last.kernel.is_empty()) {
                (Error::Cuda { code, name, during }, false) => Error::Cuda {
                    code,
                    name,
                    during: format!(
                        "{during} (the last kernel queued was {} grid {:?} block {:?}; TOMODIFF_SYNC=1 names the kernel that failed)",
                        last.kernel, last.grid, last.block
                    ),
                },
                (e, _) => e,
            }
        })
    }

    pub(super) fn memory_stats(&self) -> MemoryStats {
        self.pool.lock().unwrap().stats()
    }

    pub(super) fn reset_peak(&self) {
        self.pool.lock().unwrap().reset_peak()
    }

    pub(super) fn capturing(&self) -> bool {
        self.pool.lock().unwrap().capturing()
    }

    /// Refuses work from another thread while one thread captures (it would enter its graph).
    /// The guard is held while the work is queued, so a capture cannot begin in between.
    fn same_thread_as_capture(&self) -> Result<std::sync::MutexGuard<'_, Option<ThreadId>>> {
        let owner = self.capture_owner.lock().unwrap();
        match *owner {
            Some(o) if o != std::thread::current().id() => Err(Error::Capture(format!(
                "cuda:{} is capturing a graph on another thread; work from this thread would be recorded into it",
                self.ordinal
            ))),
            _ => Ok(owner),
        }
    }

    /// Waiting for the stream would invalidate a capture under way.
    fn not_capturing(&self, what: &str) -> Result<()> {
        if self.capturing() {
            return Err(Error::Capture(format!("{what} on cuda:{} while a graph is being captured", self.ordinal)));
        }
        Ok(())
    }

    /// A block for a request of size class `class` from the pool, or from the driver, with the
    /// block's own class; on out-of-memory the cached blocks are released and the allocation
    /// tried once more.
    fn take_block(&self, class: usize) -> Result<(CUdeviceptr, usize)> {
        let _queue = self.same_thread_as_capture()?;
        if let Some((c, b)) = self.pool.lock().unwrap().take(class) {
            return Ok((b.0, c));
        }
        self.bind()?;
        let d = api();
        let alloc = || {
            let mut p = 0;
            // SAFETY: writes one device pointer.
            (unsafe { (d.api.cuMemAlloc)(&mut p, class) }, p)
        };
        let (mut r, mut ptr) = alloc();
        // Not while capturing: the synchronize would break the capture, and cached blocks may be
        // ones the capture already uses.
        if r == driver::ERROR_OUT_OF_MEMORY && !self.capturing() {
            let cached = self.pool.lock().unwrap().drain();
            if !cached.is_empty() {
                self.synchronize()?;
                for b in cached {
                    // SAFETY: pool blocks are unused (their buffers were dropped) and freed once.
                    unsafe { (d.api.cuMemFree)(b.0) };
                }
                (r, ptr) = alloc();
            }
        }
        if r == driver::ERROR_OUT_OF_MEMORY {
            return Err(Error::OutOfMemory { device: format!("cuda:{}", self.ordinal), bytes: class });
        }
        d.check(r, "cuMemAlloc")?;
        self.pool.lock().unwrap().fresh(ptr, class);
        Ok((ptr, class))
    }

    /// Starts capturing the stream's work into a graph (nothing runs until it is replayed).
    pub(super) fn begin_capture(&self) -> Result<()> {
        let mut owner = self.same_thread_as_capture()?;
        self.bind()?;
        let mut status = driver::CAPTURE_STATUS_NONE;
        // SAFETY: writes one int for a live stream.
        api().check(unsafe { (api().api.cuStreamIsCapturing)(self.stream, &mut status) }, "cuStreamIsCapturing")?;
        if status != driver::CAPTURE_STATUS_NONE {
            return Err(Error::Capture(format!("the stream of cuda:{} is still capturing (status {status})", self.ordinal)));
        }
        self.pool.lock().unwrap().begin_capture()?;
        // Relaxed: a pool miss may still call cuMemAlloc during the capture.
        // SAFETY: the stream is live.
        let r = unsafe { (api().api.cuStreamBeginCapture)(self.stream, driver::CAPTURE_MODE_RELAXED) };
        if let Err(e) = api().check(r, "cuStreamBeginCapture") {
            let _ = self.pool.lock().unwrap().end_capture();
            return Err(e);
        }
        *owner = Some(std::thread::current().id());
        Ok(())
    }

    /// Ends the capture: the instantiated graph and the blocks reserved for it. On any error the
    /// stream has left capture mode and the reserved blocks are back in the pool.
    pub(super) fn end_capture(&self) -> Result<(CudaGraphExec, Vec<(usize, u64)>)> {
        let d = api();
        self.bind()?;
        let mut graph = std::ptr::null_mut();
        // SAFETY: the stream is capturing (begin_capture).
        let ended = d.check(unsafe { (d.api.cuStreamEndCapture)(self.stream, &mut graph) }, "cuStreamEndCapture (CUDA_ERROR_STREAM_CAPTURE_INVALIDATED: the captured work did something a capture cannot hold)");
        *self.capture_owner.lock().unwrap() = None;
        let reserved = self.pool.lock().unwrap().end_capture();
        let destroy_template = || {
            if !graph.is_null() {
                // SAFETY: the template graph is not used again.
                unsafe { (d.api.cuGraphDestroy)(graph) };
            }
        };
        let blocks = |r: Vec<(usize, DevPtr)>| -> Vec<(usize, u64)> { r.into_iter().map(|(c, b)| (c, b.0)).collect() };
        let reserved = match (ended, reserved) {
            (Ok(()), Ok(r)) => blocks(r),
            (Err(e), Ok(r)) => {
                destroy_template();
                self.give_back(blocks(r));
                return Err(e);
            }
            // A buffer made during the capture is still alive: the pool's message says so.
            (_, Err(e)) => {
                destroy_template();
                return Err(e);
            }
        };
        let mut exec = std::ptr::null_mut();
        // SAFETY: graph is the live graph the capture produced; flags 0.
        let r = unsafe { (d.api.cuGraphInstantiateWithFlags)(&mut exec, graph, 0) };
        destroy_template();
        if let Err(e) = d.check(r, "cuGraphInstantiate") {
            self.give_back(reserved);
            return Err(e);
        }
        Ok((CudaGraphExec(exec), reserved))
    }

    fn give_back(&self, blocks: Vec<(usize, u64)>) {
        let mut pool = self.pool.lock().unwrap();
        for (class, ptr) in blocks {
            pool.give(class, DevPtr(ptr));
        }
    }

    pub(super) fn launch_graph(&self, g: &CudaGraphExec) -> Result<()> {
        let _queue = self.same_thread_as_capture()?;
        self.bind()?;
        // SAFETY: g is a live executable graph of this context.
        api().check(unsafe { (api().api.cuGraphLaunch)(g.0, self.stream) }, "cuGraphLaunch")?;
        if self.sync_each && !self.capturing() {
            drop(_queue);
            self.synchronize()?;
        }
        Ok(())
    }

    /// Destroys a graph and returns its reserved blocks. No wait is needed: a replay in flight
    /// finishes before the driver frees the graph, and later work on the blocks is queued after
    /// it on the one stream (also while another graph is being captured).
    pub(super) fn release_graph(&self, g: &CudaGraphExec, reserved: Vec<(usize, u64)>) {
        if self.bind().is_ok() {
            // SAFETY: destroyed once; the driver defers the release of an in-flight graph.
            unsafe { (api().api.cuGraphExecDestroy)(g.0) };
            self.give_back(reserved);
        }
    }

    /// The module's image: the embedded fatbin, or a cubin from NVRTC when the build had no nvcc
    /// or TOMODIFF_JIT=nvrtc asks for it.
    fn module(&self, m: usize) -> Result<Handle> {
        let mut mods = self.modules.lock().unwrap();
        if let Some(h) = mods.get(&m) {
            return Ok(*h);
        }
        let src = &MODULES[m];
        let force_nvrtc = std::env::var("TOMODIFF_JIT").is_ok_and(|v| v == "nvrtc");
        let compiled;
        let image: &[u8] = match src.fatbin {
            Some(f) if !force_nvrtc => f,
            _ => {
                compiled = super::nvrtc::compile(src.name, src.source, self.info.compute_capability)?;
                &compiled
            }
        };
        // The driver reads the image in 8-byte words: copy it into an aligned buffer.
        let mut aligned = vec![0u64; image.len().div_ceil(8) + 1];
        bytemuck::cast_slice_mut::<u64, u8>(&mut aligned)[..image.len()].copy_from_slice(image);
        self.bind()?;
        let mut h = std::ptr::null_mut();
        // SAFETY: a fatbin or cubin image, alive for the call.
        let r = unsafe { (api().api.cuModuleLoadData)(&mut h, aligned.as_ptr() as *const c_void) };
        api().check(r, format!("loading module {}{}", src.name, load_hint(r, &self.info)))?;
        mods.insert(m, h);
        Ok(h)
    }

    fn function(&self, k: usize) -> Result<Func> {
        if let Some(f) = self.funcs.lock().unwrap().get(&k) {
            return Ok(*f);
        }
        let d = api();
        let m = self.module(KERNELS[k].module)?;
        let name = CString::new(KERNELS[k].name).unwrap();
        let mut handle = std::ptr::null_mut();
        // SAFETY: the module is loaded and never unloaded while the device lives.
        d.check(unsafe { (d.api.cuModuleGetFunction)(&mut handle, m, name.as_ptr()) }, format!("finding kernel {}", KERNELS[k].name))?;
        let get = |a| {
            let mut v = 0;
            // SAFETY: writes one int for a live function.
            d.check(unsafe { (d.api.cuFuncGetAttribute)(&mut v, a, handle) }, "cuFuncGetAttribute").map(|_| v)
        };
        let f = Func {
            handle,
            max_threads: get(attr::FUNC_MAX_THREADS_PER_BLOCK)?,
            registers: get(attr::FUNC_NUM_REGS)?,
            static_smem: get(attr::FUNC_SHARED_SIZE_BYTES)?,
            dyn_optin: get(attr::FUNC_MAX_DYNAMIC_SHARED_SIZE_BYTES)?,
        };
        self.funcs.lock().unwrap().insert(k, f);
        Ok(f)
    }

    /// Checks the launch against the function's and the device's limits, opts into the dynamic
    /// shared memory it needs, and queues it.
    pub(super) fn launch(&self, k: usize, grid: [u32; 3], block: [u32; 3], smem: u32, args: &mut [*mut c_void]) -> Result<()> {
        let _queue = self.same_thread_as_capture()?;
        self.bind()?;
        let d = api();
        let name = KERNELS[k].name;
        let fail = |msg: String| Error::Launch { kernel: name.into(), msg };
        let mut f = self.function(k)?;
        let need = smem as i64 + f.static_smem as i64;
        if need > self.info.max_shared_per_block_optin as i64 {
            return Err(fail(format!(
                "needs {need} bytes of shared memory ({smem} dynamic + {} static); {} ({}) allows {} per block",
                f.static_smem,
                self.name(),
                self.info.name,
                self.info.max_shared_per_block_optin
            )));
        }
        let threads = block.iter().map(|&b| b as i64).product::<i64>();
        if threads > f.max_threads as i64 {
            return Err(fail(format!(
                "a block of {threads} threads needs {} registers ({} per thread); {} ({}) allows {} threads per block for this kernel (its registers or __launch_bounds__)",
                threads * f.registers as i64,
                f.registers,
                self.name(),
                self.info.name,
                f.max_threads
            )));
        }
        if smem as i32 > f.dyn_optin {
            // SAFETY: a live function; the value is within the device's opt-in limit (checked).
            let r = unsafe { (d.api.cuFuncSetAttribute)(f.handle, attr::FUNC_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem as i32) };
            d.check(r, format!("opting {name} into {smem} bytes of dynamic shared memory"))?;
            f.dyn_optin = smem as i32;
            self.funcs.lock().unwrap().insert(k, f);
        }
        *self.last.lock().unwrap() = LastLaunch { kernel: name, grid, block };
        // SAFETY: the argument slots match the kernel's parameter list (checked by Launch), the
        // buffers are live device memory of this context, and the limits were checked above.
        let r = unsafe {
            (d.api.cuLaunchKernel)(f.handle, grid[0], grid[1], grid[2], block[0], block[1], block[2], smem, self.stream, args.as_mut_ptr(), std::ptr::null_mut())
        };
        if r != driver::SUCCESS && r < 700 {
            // A launch refused at once (configuration, resources) is about this kernel.
            return d.check(r, format!("launching {name} grid {grid:?} block {block:?}"));
        }
        self.after_queued_work(r, &format!("launching {name} grid {grid:?} block {block:?}"))?;
        if self.sync_each && !self.capturing() {
            // SAFETY: the stream is live.
            let r = unsafe { (d.api.cuStreamSynchronize)(self.stream) };
            d.check(r, format!("{name} grid {grid:?} block {block:?} (TOMODIFF_SYNC=1: synchronized after the launch)"))?;
        }
        Ok(())
    }

    fn name(&self) -> String {
        format!("cuda:{}", self.ordinal)
    }

    /// Stream-ordered byte fill (captured by a graph like a launch).
    fn memset(&self, ptr: CUdeviceptr, value: u8, len: usize) -> Result<()> {
        let _queue = self.same_thread_as_capture()?;
        self.bind()?;
        // SAFETY: the caller owns at least len bytes at ptr.
        api().check(unsafe { (api().api.cuMemsetD8Async)(ptr, value, len, self.stream) }, "cuMemsetD8Async")
    }
}

/// What a failed module load most likely means, for the message.
fn load_hint(r: driver::CUresult, info: &DeviceInfo) -> String {
    let (maj, min) = info.compute_capability;
    match r {
        200 => " (the embedded image is not one this driver can read)".into(),
        209 => format!(" (no SASS for sm_{maj}{min} in the fatbin and its PTX could not be JIT-compiled)"),
        218 => " (the driver's JIT compiler rejected the PTX)".into(),
        222 => format!(
            " (the PTX is newer than this driver, CUDA {}: build with the pinned CUDA 13.0 nvcc, scripts/install-nvcc.sh, not a newer one through NVCC)",
            driver::version_string(api().version)
        ),
        _ => String::new(),
    }
}

/// An executable CUDA graph.
pub(super) struct CudaGraphExec(Handle);

/// Device memory from the device's pool, given back on drop. Transfers and fills are ordered on
/// the device's stream. New memory is not initialised: ops write their outputs whole, and the
/// few that accumulate fill zeros first (`zero`).
#[doc(hidden)]
pub struct CudaMem {
    dev: Arc<CudaDevice>,
    ptr: CUdeviceptr,
    class: usize,
}

impl CudaMem {
    pub fn alloc(dev: &Arc<CudaDevice>, len: usize) -> Result<CudaMem> {
        let (ptr, class) = dev.take_block(pool::class(len))?;
        Ok(CudaMem { dev: dev.clone(), ptr, class })
    }
    pub fn addr(&self) -> u64 {
        self.ptr
    }
    /// Zeroes the first `len` bytes on the stream.
    pub fn zero(&mut self, len: usize) -> Result<()> {
        self.dev.memset(self.ptr, 0, len)
    }
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        let _queue = self.dev.same_thread_as_capture()?;
        self.dev.bind()?;
        // SAFETY: data.len() <= class (checked by Buffer::write); the synchronize keeps `data`
        // borrowed until the copy is done.
        let r = unsafe { (api().api.cuMemcpyHtoDAsync)(self.ptr, data.as_ptr() as *const c_void, data.len(), self.dev.stream) };
        self.dev.after_queued_work(r, "copy to device")?;
        self.dev.synchronize()
    }
    pub fn read(&self, len: usize) -> Result<Vec<u8>> {
        let _queue = self.dev.same_thread_as_capture()?;
        self.dev.bind()?;
        let mut out = vec![0u8; len];
        // SAFETY: out has len <= class bytes; the copy is ordered after queued work and awaited.
        let r = unsafe { (api().api.cuMemcpyDtoHAsync)(out.as_mut_ptr() as *mut c_void, self.ptr, len, self.dev.stream) };
        self.dev.after_queued_work(r, "copy to host")?;
        self.dev.synchronize()?;
        Ok(out)
    }
    pub fn copy_from(&mut self, src: &CudaMem, len: usize) -> Result<()> {
        let _queue = self.dev.same_thread_as_capture()?;
        self.dev.bind()?;
        // SAFETY: both blocks hold at least len bytes (checked by Buffer::copy_from).
        let r = unsafe { (api().api.cuMemcpyDtoDAsync)(self.ptr, src.ptr, len, self.dev.stream) };
        self.dev.after_queued_work(r, "device copy")
    }
}

impl Drop for CudaMem {
    fn drop(&mut self) {
        // Stream order makes the reuse safe: later work on the block runs after earlier work.
        self.dev.pool.lock().unwrap().give(self.class, DevPtr(self.ptr));
    }
}

/// Times work on the device's stream with CUDA events.
#[doc(hidden)]
pub struct GpuTimer {
    dev: Arc<CudaDevice>,
    start: Handle,
    stop: Handle,
}

impl GpuTimer {
    /// Records a start event on `dev`'s stream (cuEventCreate, cuEventRecord);
    /// `Error::Capture` while a graph is being captured, `Error::Cuda` when a driver call fails.
    pub fn start(dev: &Arc<CudaDevice>) -> Result<GpuTimer> {
        let d = api();
        dev.not_capturing("timing")?;
        dev.bind()?;
        let event = || {
            let mut e = std::ptr::null_mut();
            // SAFETY: out-pointer; flags 0 (default, timing enabled).
            d.check(unsafe { (d.api.cuEventCreate)(&mut e, 0) }, "cuEventCreate").map(|_| e)
        };
        let start = event()?;
        let stop = event().inspect_err(|_| {
            // SAFETY: created just above, destroyed once.
            unsafe { (d.api.cuEventDestroy)(start) };
        })?;
        let t = GpuTimer { dev: dev.clone(), start, stop };
        // SAFETY: live event and stream.
        d.check(unsafe { (d.api.cuEventRecord)(t.start, dev.stream) }, "cuEventRecord")?;
        Ok(t)
    }
    /// Seconds since start, once the work queued before this call has finished.
    pub fn stop(self) -> Result<f64> {
        let d = api();
        self.dev.bind()?;
        // SAFETY: live events and stream.
        d.check(unsafe { (d.api.cuEventRecord)(self.stop, self.dev.stream) }, "cuEventRecord")?;
        let r = unsafe { (d.api.cuEventSynchronize)(self.stop) };
        self.dev.after_queued_work(r, "cuEventSynchronize")?;
        let mut ms = 0f32;
        d.check(unsafe { (d.api.cuEventElapsedTime)(&mut ms, self.start, self.stop) }, "cuEventElapsedTime")?;
        Ok(ms as f64 / 1e3)
    }
}

impl Drop for GpuTimer {
    fn drop(&mut self) {
        let _ = self.dev.bind();
        // SAFETY: created in start(), destroyed once.
        unsafe {
            (api().api.cuEventDestroy)(self.start);
            (api().api.cuEventDestroy)(self.stop);
        }
    }
}
