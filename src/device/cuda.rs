//! The CUDA device through cudarc's driver API, loaded dynamically: a machine without libcuda
//! builds and runs the binary, and is told that CUDA is absent instead of panicking.
use super::pool::{self, Block, MemoryStats, Pool};
use crate::error::{Error, Result};
use crate::kernels::{self, KERNELS, MODULES};
use cudarc::driver::{result, sys, CudaContext, CudaEvent, CudaStream};
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::{Arc, Mutex};

/// Why CUDA can't be used, or None when a driver library is present.
fn driver_missing() -> Option<String> {
    // SAFETY: only probes for the library; cudarc panics on first use when it is absent.
    if unsafe { sys::is_culib_present() } {
        None
    } else {
        Some("no CUDA driver found (libcuda.so could not be loaded)".into())
    }
}

/// Number of CUDA devices, or why there are none.
pub fn cuda_device_count() -> Result<usize> {
    if let Some(why) = driver_missing() {
        return Err(Error::NoCuda(why));
    }
    result::init().map_err(|e| Error::cuda(e, "cuInit"))?;
    let n = result::device::get_count().map_err(|e| Error::cuda(e, "cuDeviceGetCount"))?;
    Ok(n as usize)
}

#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub total_memory: usize,
    pub compute_capability: (i32, i32),
    pub multiprocessors: i32,
    pub max_shared_per_block_optin: i32,
}

// Raw driver handles: valid for the context's lifetime, usable from any thread that binds it.
#[derive(Clone, Copy)]
struct Func(sys::CUfunction);
unsafe impl Send for Func {}
#[derive(Clone, Copy)]
struct Module(sys::CUmodule);
unsafe impl Send for Module {}

/// A device address owned by the pool.
struct DevPtr(sys::CUdeviceptr);

impl Block for DevPtr {
    fn addr(&self) -> u64 {
        self.0
    }
}

pub struct CudaDevice {
    ordinal: usize,
    ctx: Arc<CudaContext>,
    /// All work goes to one stream of our own: the legacy default stream cannot be captured.
    stream: Arc<CudaStream>,
    info: DeviceInfo,
    modules: Mutex<HashMap<usize, Module>>,
    funcs: Mutex<HashMap<usize, (Func, u32)>>, // kernel index -> (function, dynamic smem opted in)
    pool: Mutex<Pool<DevPtr>>,
}

impl Drop for CudaDevice {
    fn drop(&mut self) {
        // Every buffer holds the device, so none is alive here; the cached blocks go back.
        if self.bind().is_ok() && self.stream.synchronize().is_ok() {
            for b in self.pool.get_mut().unwrap_or_else(|e| e.into_inner()).drain() {
                // SAFETY: allocated by malloc_sync, owned by the pool, freed once.
                let _ = unsafe { result::free_sync(b.0) };
            }
        }
    }
}

impl CudaDevice {
    pub fn open(ordinal: usize) -> Result<Arc<CudaDevice>> {
        let n = cuda_device_count()?;
        if ordinal >= n {
            return Err(Error::NoCuda(format!("device cuda:{ordinal} requested, {n} found")));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| Error::cuda(e, "creating the context"))?;
        let stream = ctx.new_stream().map_err(|e| Error::cuda(e, "cuStreamCreate"))?;
        let attr = |a| ctx.attribute(a).map_err(|e| Error::cuda(e, "cuDeviceGetAttribute"));
        let info = DeviceInfo {
            ordinal,
            name: ctx.name().map_err(|e| Error::cuda(e, "cuDeviceGetName"))?,
            // SAFETY: cu_device comes from a live context.
            total_memory: unsafe { result::device::total_mem(ctx.cu_device()) }
                .map_err(|e| Error::cuda(e, "cuDeviceTotalMem"))?,
            compute_capability: ctx.compute_capability().map_err(|e| Error::cuda(e, "compute capability"))?,
            multiprocessors: attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
            max_shared_per_block_optin: attr(
                sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            )?,
        };
        Ok(Arc::new(CudaDevice {
            ordinal,
            ctx,
            stream,
            info,
            modules: Mutex::new(HashMap::new()),
            funcs: Mutex::new(HashMap::new()),
            pool: Mutex::new(Pool::default()),
        }))
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    pub(super) fn bind(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(|e| Error::cuda(e, "binding the context"))
    }

    /// Free device memory in bytes, now.
    pub fn free_memory(&self) -> Result<usize> {
        self.bind()?;
        result::mem_get_info().map(|(free, _)| free).map_err(|e| Error::cuda(e, "cuMemGetInfo"))
    }

    pub fn synchronize(&self) -> Result<()> {
        self.bind()?;
        self.stream.synchronize().map_err(|e| Error::cuda(e, "synchronize"))
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

    fn cu_stream(&self) -> sys::CUstream {
        self.stream.cu_stream()
    }

    /// A block for a request of size class `class` from the pool, or from the driver, with the
    /// block's own class; on out-of-memory the cached blocks are released and the allocation
    /// tried once more.
    fn take_block(&self, class: usize) -> Result<(sys::CUdeviceptr, usize)> {
        if let Some((c, b)) = self.pool.lock().unwrap().take(class) {
            return Ok((b.0, c));
        }
        self.bind()?;
        // SAFETY: plain allocations; the caller zeroes what it hands out.
        let mut r = unsafe { result::malloc_sync(class) };
        // Not while capturing: the synchronize would break the capture, and cached blocks may be
        // ones the capture already uses.
        if matches!(&r, Err(e) if e.0 == sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY) && !self.capturing() {
            let cached = self.pool.lock().unwrap().drain();
            if !cached.is_empty() {
                self.synchronize()?;
                for b in cached {
                    // SAFETY: pool blocks are unused (their buffers were dropped) and freed once.
                    let _ = unsafe { result::free_sync(b.0) };
                }
                r = unsafe { result::malloc_sync(class) };
            }
        }
        let ptr = r.map_err(|e| {
            if e.0 == sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY {
                Error::OutOfMemory { device: format!("cuda:{}", self.ordinal), bytes: class }
            } else {
                Error::cuda(e, "cuMemAlloc")
            }
        })?;
        self.pool.lock().unwrap().fresh(ptr, class);
        Ok((ptr, class))
    }

    /// Starts capturing the stream's work into a graph (nothing runs until it is replayed).
    pub(super) fn begin_capture(&self) -> Result<()> {
        self.pool.lock().unwrap().begin_capture()?;
        self.bind()?;
        // Relaxed: a pool miss may still call cuMemAlloc during the capture.
        // SAFETY: the stream is live.
        let r = unsafe { result::stream::begin_capture(self.cu_stream(), sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED) };
        if let Err(e) = r {
            let _ = self.pool.lock().unwrap().end_capture();
            return Err(Error::cuda(e, "cuStreamBeginCapture"));
        }
        Ok(())
    }

    /// Ends the capture: the instantiated graph and the blocks reserved for it.
    pub(super) fn end_capture(&self) -> Result<(CudaGraphExec, Vec<(usize, u64)>)> {
        self.bind()?;
        // SAFETY: the stream is capturing (begin_capture).
        let graph = unsafe { result::stream::end_capture(self.cu_stream()) };
        let reserved = self.pool.lock().unwrap().end_capture();
        let graph = graph.map_err(|e| Error::cuda(e, "cuStreamEndCapture (the captured work used an operation a graph cannot hold)"))?;
        let reserved = match reserved {
            Ok(r) => r.into_iter().map(|(c, b)| (c, b.0)).collect(),
            Err(e) => {
                // SAFETY: the template graph is not used again.
                let _ = unsafe { result::graph::destroy(graph) };
                return Err(e);
            }
        };
        let mut exec = std::ptr::null_mut();
        // SAFETY: graph is the live graph the capture produced; flags 0.
        let r = unsafe { sys::cuGraphInstantiateWithFlags(&mut exec, graph, 0) }.result();
        // SAFETY: the executable graph keeps what it needs; the template is no longer used.
        let _ = unsafe { result::graph::destroy(graph) };
        if let Err(e) = r {
            let mut pool = self.pool.lock().unwrap();
            for (class, ptr) in reserved {
                pool.give(class, DevPtr(ptr));
            }
            return Err(Error::cuda(e, "cuGraphInstantiate"));
        }
        Ok((CudaGraphExec(exec), reserved))
    }

    pub(super) fn launch_graph(&self, g: &CudaGraphExec) -> Result<()> {
        self.bind()?;
        // SAFETY: g is a live executable graph of this context.
        unsafe { result::graph::launch(g.0, self.cu_stream()) }.map_err(|e| Error::cuda(e, "cuGraphLaunch"))
    }

    /// Returns a graph's reserved blocks once its replays have finished, and destroys it.
    pub(super) fn release_graph(&self, g: &CudaGraphExec, reserved: Vec<(usize, u64)>) {
        if self.synchronize().is_ok() {
            // SAFETY: no replay is in flight after the synchronize; destroyed once.
            let _ = unsafe { result::graph::exec_destroy(g.0) };
            let mut pool = self.pool.lock().unwrap();
            for (class, ptr) in reserved {
                pool.give(class, DevPtr(ptr));
            }
        }
    }

    fn module(&self, m: usize) -> Result<Module> {
        let mut mods = self.modules.lock().unwrap();
        if let Some(h) = mods.get(&m) {
            return Ok(*h);
        }
        let src = &MODULES[m];
        let ptx = match src.ptx {
            Some(p) => p.to_string(),
            None => nvrtc_compile(src)?,
        };
        let image = CString::new(ptx).map_err(|_| Error::Launch { kernel: src.name.into(), msg: "PTX holds a NUL".into() })?;
        self.bind()?;
        // SAFETY: image is NUL-terminated PTX text.
        let h = unsafe { result::module::load_data(image.as_ptr() as *const c_void) }
            .map_err(|e| Error::cuda(e, format!("loading module {}", src.name)))?;
        mods.insert(m, Module(h));
        Ok(Module(h))
    }

    fn function(&self, k: usize, smem: u32) -> Result<sys::CUfunction> {
        let info = &KERNELS[k];
        let cached = self.funcs.lock().unwrap().get(&k).copied();
        let (f, optin) = match cached {
            Some(c) => c,
            None => {
                let m = self.module(info.module)?;
                let name = CString::new(info.name).unwrap();
                // SAFETY: the module is loaded and never unloaded while the device lives.
                let f = unsafe { result::module::get_function(m.0, name) }
                    .map_err(|e| Error::cuda(e, format!("finding kernel {}", info.name)))?;
                (Func(f), 48 * 1024)
            }
        };
        // Dynamic shared memory above 48 KB must be opted into per function.
        let mut optin = optin;
        if smem > optin {
            // SAFETY: f is a live function handle.
            unsafe {
                result::function::set_function_attribute(
                    f.0,
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    smem as i32,
                )
            }
            .map_err(|e| Error::cuda(e, format!("setting shared memory of {}", info.name)))?;
            optin = smem;
        }
        self.funcs.lock().unwrap().insert(k, (f, optin));
        Ok(f.0)
    }

    pub(super) fn launch(&self, k: usize, grid: [u32; 3], block: [u32; 3], smem: u32, args: &mut [*mut c_void]) -> Result<()> {
        self.bind()?;
        let f = self.function(k, smem)?;
        // SAFETY: the argument slots match the kernel's parameter list (checked by Launch).
        unsafe {
            result::launch_kernel(
                f,
                (grid[0], grid[1], grid[2]),
                (block[0], block[1], block[2]),
                smem,
                self.cu_stream(),
                args,
            )
        }
        .map_err(|e| Error::cuda(e, format!("launching {}", kernels::KERNELS[k].name)))
    }
}

/// With no nvcc at build time, the embedded source is compiled here. common.cuh is spliced in
/// because NVRTC cannot see the kernels/ folder; CUDA headers come from CUDA_HOME or /usr/local/cuda.
fn nvrtc_compile(src: &kernels::ModuleSource) -> Result<String> {
    let text = src.source.replace("#include \"common.cuh\"", kernels::COMMON_CUH);
    let mut include_paths = Vec::new();
    for root in [std::env::var("CUDA_HOME").ok(), std::env::var("CUDA_PATH").ok(), Some("/usr/local/cuda".into())]
        .into_iter()
        .flatten()
    {
        for sub in ["include", "include/cccl"] {
            let p = std::path::Path::new(&root).join(sub);
            if p.is_dir() {
                include_paths.push(p.to_string_lossy().into_owned());
            }
        }
    }
    let opts = cudarc::nvrtc::CompileOptions {
        arch: Some("compute_80"),
        include_paths,
        options: vec!["-std=c++17".into()],
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(text, opts)
        .map(|p| p.to_src())
        .map_err(|e| Error::Launch { kernel: src.name.into(), msg: format!("NVRTC could not compile the module: {e}") })
}

/// An executable CUDA graph.
pub(super) struct CudaGraphExec(sys::CUgraphExec);

/// Device memory from the device's pool, given back on drop. Transfers and fills are ordered on
/// the device's stream.
pub struct CudaMem {
    dev: Arc<CudaDevice>,
    ptr: sys::CUdeviceptr,
    class: usize,
}

impl CudaMem {
    pub fn alloc(dev: &Arc<CudaDevice>, len: usize) -> Result<CudaMem> {
        let (ptr, class) = dev.take_block(pool::class(len))?;
        let mem = CudaMem { dev: dev.clone(), ptr, class };
        // Every buffer starts defined; a fill on the stream is captured like a launch.
        // SAFETY: ptr holds at least class >= len bytes.
        unsafe { result::memset_d8_async(ptr, 0, len, dev.cu_stream()) }.map_err(|e| Error::cuda(e, "cuMemsetD8Async"))?;
        Ok(mem)
    }
    pub fn addr(&self) -> u64 {
        self.ptr
    }
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.dev.bind()?;
        // SAFETY: data.len() <= class (checked by Buffer::write); the synchronize keeps `data`
        // borrowed until the copy is done.
        unsafe { result::memcpy_htod_async(self.ptr, data, self.dev.cu_stream()) }.map_err(|e| Error::cuda(e, "copy to device"))?;
        self.dev.synchronize()
    }
    pub fn read(&self, len: usize) -> Result<Vec<u8>> {
        self.dev.bind()?;
        let mut out = vec![0u8; len];
        // SAFETY: out has len <= class bytes; the copy is ordered after queued work and awaited.
        unsafe { result::memcpy_dtoh_async(&mut out, self.ptr, self.dev.cu_stream()) }.map_err(|e| Error::cuda(e, "copy to host"))?;
        self.dev.synchronize()?;
        Ok(out)
    }
    pub fn copy_from(&mut self, src: &CudaMem, len: usize) -> Result<()> {
        self.dev.bind()?;
        // SAFETY: both blocks hold at least len bytes (checked by Buffer::copy_from).
        unsafe { result::memcpy_dtod_async(self.ptr, src.ptr, len, self.dev.cu_stream()) }.map_err(|e| Error::cuda(e, "device copy"))
    }
}

impl Drop for CudaMem {
    fn drop(&mut self) {
        // Stream order makes the reuse safe: later work on the block runs after earlier work.
        self.dev.pool.lock().unwrap().give(self.class, DevPtr(self.ptr));
    }
}

/// Times work on the device's stream with CUDA events.
pub struct GpuTimer {
    dev: Arc<CudaDevice>,
    start: CudaEvent,
    stop: CudaEvent,
}

impl GpuTimer {
    pub fn start(dev: &Arc<CudaDevice>) -> Result<GpuTimer> {
        let ev = || dev.ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).map_err(|e| Error::cuda(e, "cuEventCreate"));
        let t = GpuTimer { dev: dev.clone(), start: ev()?, stop: ev()? };
        t.start.record(&t.dev.stream).map_err(|e| Error::cuda(e, "cuEventRecord"))?;
        Ok(t)
    }
    /// Seconds since start, once the work queued before this call has finished.
    pub fn stop(self) -> Result<f64> {
        self.stop.record(&self.dev.stream).map_err(|e| Error::cuda(e, "cuEventRecord"))?;
        self.stop.synchronize().map_err(|e| Error::cuda(e, "cuEventSynchronize"))?;
        let ms = self.start.elapsed_ms(&self.stop).map_err(|e| Error::cuda(e, "cuEventElapsedTime"))?;
        Ok(ms as f64 / 1e3)
    }
}
