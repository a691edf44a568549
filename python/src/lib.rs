//! `tomodiff._tomodiff`: the compiled half of the Python package (python/tomodiff/ is the other).
//! Functions over geometry JSON strings and float32 buffers: the package checks and converts the
//! numpy arrays (float32, C-contiguous) and allocates the outputs, which these functions fill.
//! The GIL is released during the work; errors become the exceptions declared here, with the
//! library's messages (the command line's).
use pyo3::buffer::PyBuffer;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Mutex;
use tomodiff::ct::{fbp, iterative, noise, phantom, siddon::Projector, Geometry};
use tomodiff::diffusion::recon::{fdk_start, reconstruct_scan, Progressive, ReconOptions, Start};
use tomodiff::diffusion::sampler::{sample as sample_volume, SamplerOptions};
use tomodiff::nn::{model_files, Arch, UNet, UNetConfig, Weights};
use tomodiff::{Device, Error};

create_exception!(_tomodiff, TomodiffError, PyException, "Base class of tomodiff's errors.");
create_exception!(_tomodiff, GeometryError, TomodiffError, "A scan geometry that is not valid.");
create_exception!(
    _tomodiff,
    ShapeError,
    TomodiffError,
    "An array that cannot be used: the wrong shape for the geometry (or a shape smaller than the\nnetwork's patch), a dtype that is not real numbers (complex, object, strings), or values that are\nnot finite (NaN, inf) or beyond float32's range. Raised by every function that takes arrays,\nbefore any work."
);
create_exception!(
    _tomodiff,
    ArgumentError,
    TomodiffError,
    "An argument that is not allowed: a number out of its range (a negative count or seed), a value\nof the wrong type, an unknown name (window, phantom, start) or device."
);
create_exception!(_tomodiff, MemoryBudgetError, TomodiffError, "The job does not fit the device's memory or the budget.");
create_exception!(_tomodiff, CancelledError, TomodiffError, "The progress callback returned False (or another false value except None).");
create_exception!(_tomodiff, ModelError, TomodiffError, "Weights or a model config that cannot be used.");
create_exception!(_tomodiff, DeviceError, TomodiffError, "CUDA or the device failed.");

/// The Python exception for a library error (the message is the command line's).
fn py_err(e: Error) -> PyErr {
    let m = e.to_string();
    match e {
        Error::Geometry(_) => GeometryError::new_err(m),
        Error::Shape(_) | Error::DType(_) => ShapeError::new_err(m),
        Error::Argument(_) | Error::BadDevice(_) => ArgumentError::new_err(m),
        Error::MemoryBudget { .. } | Error::OutOfMemory { .. } => MemoryBudgetError::new_err(m),
        Error::Cancelled => CancelledError::new_err(m),
        Error::Weights { .. } | Error::SafeTensors { .. } | Error::Config(_) => ModelError::new_err(m),
        Error::Io { cause, .. } if cause.kind() == std::io::ErrorKind::NotFound => pyo3::exceptions::PyFileNotFoundError::new_err(m),
        Error::Io { .. } => pyo3::exceptions::PyOSError::new_err(m),
        _ => DeviceError::new_err(m),
    }
}

fn geometry(json: &str) -> PyResult<Geometry> {
    Geometry::from_json(json).map_err(py_err)
}

fn device(name: &str) -> PyResult<Device> {
    if name == "auto" {
        return Ok(Device::auto());
    }
    Device::parse(name).map_err(py_err)
}

/// The values of a float32 buffer, checked to number `n`.
fn values(py: Python<'_>, b: &PyBuffer<f32>, n: usize, what: &str) -> PyResult<Vec<f32>> {
    if b.item_count() != n {
        return Err(ShapeError::new_err(format!("{what} holds {} values, the geometry needs {n}", b.item_count())));
    }
    b.to_vec(py)
}

/// Writes `v` into the writable float32 buffer `out`.
fn fill(py: Python<'_>, out: &PyBuffer<f32>, v: &[f32]) -> PyResult<()> {
    if out.item_count() != v.len() {
        return Err(ShapeError::new_err(format!("the output holds {} values, {} expected", out.item_count(), v.len())));
    }
    out.copy_from_slice(py, v)
}

/// (volume shape (nz, ny, nx), projection shape (views, rows, cols)) of a geometry document;
/// raises GeometryError naming the field at fault.
#[pyfunction]
fn geometry_shapes(json: &str) -> PyResult<([usize; 3], [usize; 3])> {
    let g = geometry(json)?;
    Ok((g.volume.shape, g.proj_shape()))
}

/// FBP/FDK's warnings about a scan (lines never measured, a detector missing the axis, radians
/// given as degrees).
#[pyfunction]
fn scan_warnings(json: &str) -> PyResult<Vec<String>> {
    fbp::warnings(&geometry(json)?).map_err(py_err)
}

/// `f` on the projector of `g` on device `dev`, without the GIL.
fn with_projector(py: Python<'_>, g: &Geometry, dev: &str, f: impl FnOnce(&Projector) -> tomodiff::Result<Vec<f32>> + Send) -> PyResult<Vec<f32>> {
    let dev = device(dev)?;
    py.detach(|| f(&Projector::new(g.clone(), &dev)?)).map_err(py_err)
}

/// Siddon forward projection of `volume` into `out` (line integrals).
#[pyfunction]
fn project(py: Python<'_>, json: &str, volume: PyBuffer<f32>, out: PyBuffer<f32>, device: &str) -> PyResult<()> {
    let g = geometry(json)?;
    let x = values(py, &volume, g.volume.len(), "the volume")?;
    let y = with_projector(py, &g, device, |p| p.forward_host(&x))?;
    fill(py, &out, &y)
}

/// The exact adjoint (Siddon backprojection) of `proj` into `out`.
#[pyfunction]
fn backproject(py: Python<'_>, json: &str, proj: PyBuffer<f32>, out: PyBuffer<f32>, device: &str) -> PyResult<()> {
    let g = geometry(json)?;
    let y = values(py, &proj, g.n_rays(), "the projections")?;
    let x = with_projector(py, &g, device, |p| p.adjoint_host(&y))?;
    fill(py, &out, &x)
}

/// FBP (parallel, fan) or FDK (cone) of `proj` into `out`, with `window`.
#[pyfunction]
fn fbp_into(py: Python<'_>, json: &str, proj: PyBuffer<f32>, window: &str, out: PyBuffer<f32>) -> PyResult<()> {
    let g = geometry(json)?;
    let y = values(py, &proj, g.n_rays(), "the projections")?;
    let w = fbp::Window::parse(window).map_err(py_err)?;
    let x = py.detach(|| fbp::fbp(&g, &y, w)).map_err(py_err)?;
    fill(py, &out, &x)
}

/// CGLS (`method` "cgls") or SIRT ("sirt", relaxation `lam`, `nonneg`) iterations on `volume`,
/// updated in place from its values.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn iterate(py: Python<'_>, json: &str, method: &str, proj: PyBuffer<f32>, volume: PyBuffer<f32>, iters: usize, lam: f32, nonneg: bool, device: &str) -> PyResult<()> {
    let g = geometry(json)?;
    let y = values(py, &proj, g.n_rays(), "the projections")?;
    let x0 = values(py, &volume, g.volume.len(), "the volume")?;
    if method != "cgls" && method != "sirt" {
        return Err(ArgumentError::new_err(format!("unknown method {method:?}: expected cgls or sirt")));
    }
    let x = with_projector(py, &g, device, |p| match method {
        "cgls" => iterative::cgls_host(p, &y, &x0, iters),
        _ => iterative::sirt_host(p, &y, &x0, iters, lam, nonneg),
    })?;
    fill(py, &volume, &x)
}

/// A phantom by name (shepp-logan, ellipsoids, chest) on the geometry's grid, into `out` (1/mm).
#[pyfunction]
fn phantom_into(py: Python<'_>, name: &str, json: &str, seed: u64, supersample: usize, out: PyBuffer<f32>) -> PyResult<()> {
    let g = geometry(json)?;
    let v = py.detach(|| phantom::averaged(name, &g.volume, seed, supersample)).map_err(py_err)?;
    fill(py, &out, &v)
}

/// Poisson noise at `i0` photons per ray on line integrals `proj` (rows of `cols`), in place.
#[pyfunction]
fn poisson(py: Python<'_>, proj: PyBuffer<f32>, cols: usize, i0: f64, seed: u64) -> PyResult<()> {
    let mut y = proj.to_vec(py)?;
    py.detach(|| noise::poisson(&mut y, cols, i0, seed)).map_err(py_err)?;
    proj.copy_from_slice(py, &y)
}

/// A diffusion prior: a network config and its weights.
#[pyclass(frozen, module = "tomodiff._tomodiff")]
struct Model {
    cfg: UNetConfig,
    weights: Weights,
    name: String,
}

#[pymethods]
impl Model {
    /// The config as a JSON string.
    #[getter]
    fn config_json(&self) -> String {
        serde_json::to_string(&self.cfg).unwrap_or_default()
    }
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }
    /// The patch shape (pz, py, px).
    #[getter]
    fn patch(&self) -> [usize; 3] {
        self.cfg.patch
    }
    /// The attenuation (1/mm) that maps to the model range's 1.
    #[getter]
    fn mu_max(&self) -> f32 {
        self.cfg.mu_max
    }
    fn __repr__(&self) -> String {
        format!("Model({:?}, patch {:?}, mu_max {})", self.name, self.cfg.patch, self.cfg.mu_max)
    }
}

/// Loads safetensors `weights` with `config` (a preset or a JSON file; None: the config.json
/// beside the weights), or the shipped prior when `weights` is None.
#[pyfunction]
#[pyo3(signature = (weights=None, config=None))]
fn load_model(py: Python<'_>, weights: Option<String>, config: Option<String>) -> PyResult<Model> {
    let (cfg, w, name) = py
        .detach(|| match &weights {
            Some(p) => model_files::load(Path::new(p), config.as_deref()).map(|(c, w)| (c, w, p.clone())),
            None => model_files::shipped().map(|(c, w)| (c, w, format!("{} (shipped)", model_files::SHIPPED_NAME))),
        })
        .map_err(py_err)?;
    Ok(Model { cfg, weights: w, name })
}

/// The options of `reconstruct` and `sample`, from keyword arguments the package checked.
fn sampler_options(o: &Bound<'_, PyDict>, default_rounds: usize) -> PyResult<SamplerOptions> {
    let get = |k: &str| o.get_item(k).ok().flatten();
    let mut s = SamplerOptions { rounds: default_rounds, ..SamplerOptions::default() };
    if let Some(v) = get("steps") {
        s.steps = v.extract()?;
    }
    if let Some(v) = get("rounds") {
        s.rounds = v.extract()?;
    }
    if let Some(v) = get("eta") {
        s.eta = v.extract()?;
    }
    if let Some(v) = get("batch") {
        s.batch = v.extract()?;
    }
    if let Some(v) = get("seed") {
        s.seed = v.extract()?;
    }
    Ok(s)
}

/// A progress callback for the library: calls `cb(done, total)` with the GIL (a false value other
/// than None cancels: False, 0, ...), and stops on Ctrl-C or an exception (raised in the callback
/// or by its value's truth test), keeping the Python exception to raise afterwards.
fn progress_fn<'a>(cb: &'a Option<Py<PyAny>>, raised: &'a Mutex<Option<PyErr>>) -> impl FnMut(usize, usize) -> ControlFlow<()> + Send + 'a {
    move |done, total| {
        Python::attach(|py| {
            let stop = |e: PyErr| {
                *raised.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                ControlFlow::Break(())
            };
            if let Err(e) = py.check_signals() {
                return stop(e);
            }
            let Some(f) = cb.as_ref() else { return ControlFlow::Continue(()) };
            let r = match f.call1(py, (done, total)) {
                Ok(r) => r.into_bound(py),
                Err(e) => return stop(e),
            };
            if r.is_none() {
                return ControlFlow::Continue(());
            }
            match r.is_truthy() {
                Ok(true) => ControlFlow::Continue(()),
                Ok(false) => ControlFlow::Break(()),
                Err(e) => stop(e),
            }
        })
    }
}

/// The Python exception of a cancelled call: what the callback raised (or Ctrl-C), else
/// CancelledError.
fn cancelled_or(e: Error, raised: Mutex<Option<PyErr>>) -> PyErr {
    match (e, raised.into_inner().unwrap_or_else(|p| p.into_inner())) {
        (Error::Cancelled, Some(p)) => p,
        (e, _) => py_err(e),
    }
}

/// The prior's reconstruction of `proj` into `out` (1/mm); `options` hold steps, rounds, eta,
/// batch, seed, cg_iters, gamma, start ("noise" or "fdk:T"), progressive ("STEPS:T"), samples, final_dc,
/// average_below (a timestep or None), memory_budget (bytes). Returns the
/// timing and memory figures, and the data-range warning when there is one. As the command line,
/// FDK always runs to check the data's range against the prior's mu_max; a start from noise on a
/// geometry FDK cannot take only skips that check.
#[pyfunction]
#[pyo3(signature = (model, json, proj, out, options, device, progress=None))]
#[allow(clippy::too_many_arguments)]
fn reconstruct_into(py: Python<'_>, model: &Model, json: &str, proj: PyBuffer<f32>, out: PyBuffer<f32>, options: &Bound<'_, PyDict>, device: &str, progress: Option<Py<PyAny>>) -> PyResult<Py<PyDict>> {
    let g = geometry(json)?;
    let y = values(py, &proj, g.n_rays(), "the projections")?;
    let dev = self::device(device)?;
    let get = |k: &str| options.get_item(k).ok().flatten();
    let mut ro = ReconOptions { sampler: sampler_options(options, 2)?, ..ReconOptions::default() };
    if let Some(v) = get("cg_iters") {
        ro.cg_iters = v.extract()?;
    }
    if let Some(v) = get("gamma") {
        ro.gamma = v.extract()?;
    }
    if let Some(v) = get("final_dc") {
        ro.final_dc = v.extract()?;
    }
    if let Some(v) = get("average_below") {
        ro.average_below = v.extract()?;
    }
    if let Some(v) = get("start") {
        ro.start = Start::parse(&v.extract::<String>()?).map_err(py_err)?;
    }
    if let Some(v) = get("progressive") {
        ro.progressive = Some(Progressive::parse(&v.extract::<String>()?).map_err(py_err)?);
    }
    if let Some(v) = get("samples") {
        ro.samples = v.extract()?;
    }
    ro.validate().map_err(py_err)?;
    let budget: Option<usize> = get("memory_budget").map(|v| v.extract()).transpose()?;
    let raised = Mutex::new(None);
    let result = py.detach(|| {
        // FDK checks the data's range (as `tomodiff reconstruct` does) and starts a noised start.
        let (fdk, warning) = fdk_start(&g, &y, &model.cfg, &ro)?;
        let r = reconstruct_scan(&model.cfg, &model.weights, &g, &y, fdk.as_deref(), &ro, &dev, budget, progress_fn(&progress, &raised));
        r.map(|(mu, stats)| (mu, stats, warning))
    });
    let (mu, stats, warning) = result.map_err(|e| cancelled_or(e, raised))?;
    fill(py, &out, &mu)?;
    let d = PyDict::new(py);
    d.set_item("seconds", stats.sample.total_s)?;
    d.set_item("network_seconds", stats.sample.network_s)?;
    d.set_item("projector_seconds", stats.projector_s)?;
    d.set_item("passes", stats.sample.passes)?;
    d.set_item("memory_estimate", stats.memory_estimate)?;
    d.set_item("device", dev.name())?;
    d.set_item("warning", warning)?;
    d.set_item("last_pass_solved", ro.last_pass_solved())?;
    Ok(d.unbind())
}

/// An unconditional sample of `shape` (nz, ny, nx) into `out`, in attenuation (1/mm).
#[pyfunction]
#[pyo3(signature = (model, shape, out, options, device, progress=None))]
fn sample_into(py: Python<'_>, model: &Model, shape: [usize; 3], out: PyBuffer<f32>, options: &Bound<'_, PyDict>, device: &str, progress: Option<Py<PyAny>>) -> PyResult<()> {
    let mut opts = sampler_options(options, 1)?;
    opts.clip_x0 &= model.cfg.clip_x0;
    let dev = self::device(device)?;
    if shape.iter().zip(model.cfg.patch).any(|(n, p)| *n < p) {
        return Err(ShapeError::new_err(format!("the shape {shape:?} is smaller than the network's patch {:?}", model.cfg.patch)));
    }
    let raised = Mutex::new(None);
    let x = py
        .detach(|| {
            let net = UNet::new(Arch::new(&model.cfg), &model.weights, &dev)?;
            sample_volume(&net, shape, &opts, None, |_, _| Ok(()), progress_fn(&progress, &raised))
        })
        .map_err(|e| cancelled_or(e, raised))?
        .0;
    let map = model.cfg.intensity();
    let mu: Vec<f32> = x.iter().map(|v| map.to_mu(*v)).collect();
    fill(py, &out, &mu)
}

/// PSNR (whole and per plane, against the reference's range) and SSIM per plane of `x` against
/// `reference`, both (nz, ny, nx).
#[pyfunction]
fn metrics(py: Python<'_>, shape: [usize; 3], x: PyBuffer<f32>, reference: PyBuffer<f32>) -> PyResult<Py<PyDict>> {
    let n = shape.iter().product();
    let (a, b) = (values(py, &x, n, "the volume")?, values(py, &reference, n, "the reference")?);
    let m = py.detach(|| tomodiff::metrics::compare(shape, &a, &b)).map_err(py_err)?;
    let d = PyDict::new(py);
    for (k, v) in [("psnr", m.psnr), ("psnr_axial", m.psnr_axial), ("psnr_coronal", m.psnr_coronal), ("psnr_sagittal", m.psnr_sagittal), ("ssim_axial", m.ssim_axial), ("ssim_coronal", m.ssim_coronal), ("ssim_sagittal", m.ssim_sagittal)] {
        d.set_item(k, v)?;
    }
    Ok(d.unbind())
}

/// The devices this build can use ("cpu", "emu", and "cuda:N" for each GPU found).
#[pyfunction]
fn devices() -> Vec<String> {
    let mut v = vec!["cpu".to_string(), "emu".to_string()];
    if let gpu @ Device::Cuda(_) = Device::auto() {
        v.push(gpu.name());
    }
    v
}

#[pymodule]
fn _tomodiff(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("TomodiffError", py.get_type::<TomodiffError>())?;
    m.add("GeometryError", py.get_type::<GeometryError>())?;
    m.add("ShapeError", py.get_type::<ShapeError>())?;
    m.add("ArgumentError", py.get_type::<ArgumentError>())?;
    m.add("MemoryBudgetError", py.get_type::<MemoryBudgetError>())?;
    m.add("CancelledError", py.get_type::<CancelledError>())?;
    m.add("ModelError", py.get_type::<ModelError>())?;
    m.add("DeviceError", py.get_type::<DeviceError>())?;
    m.add_class::<Model>()?;
    m.add_function(wrap_pyfunction!(geometry_shapes, m)?)?;
    m.add_function(wrap_pyfunction!(scan_warnings, m)?)?;
    m.add_function(wrap_pyfunction!(project, m)?)?;
    m.add_function(wrap_pyfunction!(backproject, m)?)?;
    m.add_function(wrap_pyfunction!(fbp_into, m)?)?;
    m.add_function(wrap_pyfunction!(iterate, m)?)?;
    m.add_function(wrap_pyfunction!(phantom_into, m)?)?;
    m.add_function(wrap_pyfunction!(poisson, m)?)?;
    m.add_function(wrap_pyfunction!(load_model, m)?)?;
    m.add_function(wrap_pyfunction!(reconstruct_into, m)?)?;
    m.add_function(wrap_pyfunction!(sample_into, m)?)?;
    m.add_function(wrap_pyfunction!(metrics, m)?)?;
    m.add_function(wrap_pyfunction!(devices, m)?)?;
    Ok(())
}
