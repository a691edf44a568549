//! CT commands: phantom, project, backproject, fbp, iterative, metrics.
use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tomodiff::ct::{fbp, iterative, noise, phantom, siddon::Projector, Geometry, VolumeGrid};
use tomodiff::io::output::{self, Kind, Outputs};
use tomodiff::io::{self, preview};
use tomodiff::{DType, Device, Tensor};

#[derive(Args)]
pub struct PhantomArgs {
    /// shepp-logan (Yu-Ye-Wang densities), shepp-logan-ks (Kak-Slaney), ellipsoids, chest or thorax.
    name: String,
    /// Output volume (.npy, .nii, .nii.gz).
    #[arg(short, long)]
    output: PathBuf,
    /// Volume shape nz,ny,nx (or take the grid from --geometry).
    #[arg(long, value_delimiter = ',')]
    shape: Option<Vec<usize>>,
    /// Voxel size sz,sy,sx in mm (with --shape); default 1 mm, and for thorax 440 mm across the
    /// larger of ny, nx (the whole body in view).
    #[arg(long, value_delimiter = ',')]
    voxel_size: Option<Vec<f64>>,
    /// Geometry file whose volume grid the phantom fills.
    #[arg(long)]
    geometry: Option<PathBuf>,
    /// The phantom's seed (ellipsoids, chest and thorax vary with it): the same seed gives the
    /// same volume.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Render on a grid K times finer per axis and average over each voxel (the mean attenuation
    /// a CT voxel holds); 1: as rendered (the value at each voxel centre for thorax and chest;
    /// the ellipsoid phantoms average 2^3 points per voxel). Costs K^3 times the rendering.
    #[arg(long, default_value_t = 1)]
    supersample: usize,
    /// PNG of the middle axial, coronal and sagittal slices.
    #[arg(long)]
    preview: Option<PathBuf>,
}

#[derive(Args)]
pub struct ProjectArgs {
    /// The scan's geometry: a JSON file (docs/CT.md, "Conventions"; the demo writes one).
    #[arg(short, long)]
    geometry: PathBuf,
    /// Volume (.npy, .nii, .nii.gz) of the geometry's shape (nz, ny, nx).
    #[arg(short, long)]
    input: PathBuf,
    /// Projections (.npy), (views, rows, cols).
    #[arg(short, long)]
    output: PathBuf,
    /// Add Poisson noise for this many incident photons per ray.
    #[arg(long)]
    noise_i0: Option<f64>,
    /// Seed of the Poisson noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write (rows, views, cols) as ASTRA keeps projections.
    #[arg(long)]
    astra_layout: bool,
    /// When the volume file states a voxel size other than the geometry's: `file` or `geometry`
    /// says which wins (without it, the disagreement is an error).
    #[arg(long)]
    voxel_size_from: Option<String>,
    /// cpu, emu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Device memory for the volume and a slab of views, in GiB (default: 90% of the free GPU
    /// memory, or of the host's available memory on the CPU).
    #[arg(long)]
    memory_budget_gb: Option<f64>,
}

/// Bytes the projector may use on `dev`: the user's figure, else `Device::memory_budget` (90% of
/// free memory).
pub(crate) fn budget(dev: &Device, gb: Option<f64>) -> Result<usize> {
    if let Some(g) = gb {
        if !(g.is_finite() && g > 0.0) {
            bail!("--memory-budget-gb must be positive, got {g}");
        }
        return Ok((g * (1u64 << 30) as f64) as usize);
    }
    Ok(dev.memory_budget()?)
}

fn view_bar(n: usize, msg: String) -> ProgressBar {
    let pb = ProgressBar::new(n as u64);
    pb.set_style(ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} views {elapsed} (eta {eta})").unwrap());
    pb.set_message(msg);
    pb
}

#[derive(Args)]
pub struct ReconArgs {
    /// The scan's geometry: a JSON file (docs/CT.md, "Conventions"; the demo writes one).
    #[arg(short, long)]
    geometry: PathBuf,
    /// Projections (.npy), (views, rows, cols), or (rows, views, cols) with --astra-layout.
    #[arg(short, long)]
    input: PathBuf,
    /// Output volume (.npy, .nii, .nii.gz).
    #[arg(short, long)]
    output: PathBuf,
    /// The projections are in ASTRA's sinogram order, (rows, views, cols).
    #[arg(long)]
    astra_layout: bool,
    /// cpu, emu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    /// PNG of the middle slices.
    #[arg(long)]
    preview: Option<PathBuf>,
    /// backproject: device memory for the volume and a slab of views, in GiB (default: 90% of the
    /// free GPU memory, or of the host's available memory on the CPU).
    #[arg(long)]
    memory_budget_gb: Option<f64>,
}

#[derive(Args)]
pub struct FbpArgs {
    #[command(flatten)]
    common: ReconArgs,
    /// Filter window: ram-lak, shepp-logan, cosine, hamming, hann.
    #[arg(long, default_value = "hann")]
    window: String,
}

#[derive(Args)]
pub struct IterativeArgs {
    #[command(flatten)]
    common: ReconArgs,
    /// cgls or sirt.
    #[arg(long, default_value = "cgls")]
    method: String,
    /// Iterations.
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// SIRT relaxation, in (0, 2).
    #[arg(long, default_value_t = 1.0)]
    lambda: f32,
    /// SIRT: clamp negative values after each update.
    #[arg(long)]
    nonneg: bool,
}

#[derive(Args)]
pub struct MetricsArgs {
    /// Volume to judge.
    #[arg(short, long)]
    input: PathBuf,
    /// Ground truth of the same shape.
    #[arg(long)]
    reference: PathBuf,
    /// Also write the figures as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
pub struct PreviewArgs {
    /// Volumes of one 3D shape (.npy, .nii, .nii.gz, a DICOM series): one row each, in this order.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// The PNG. Grey levels span the first volume's 0.5th to 99.5th percentile, so the reference
    /// given first puts every row on its scale.
    #[arg(short, long)]
    output: PathBuf,
}

fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").unwrap());
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// A volume of the grid's shape. A voxel size stated by the file (NIfTI, DICOM) that differs from
/// the grid's is an error unless `wins` is `file` (the grid takes the file's) or `geometry`.
pub(crate) fn load_volume(path: &Path, grid: &mut VolumeGrid, wins: Option<&str>) -> Result<Vec<f32>> {
    if !matches!(wins, None | Some("file" | "geometry")) {
        bail!("--voxel-size-from takes file or geometry, not {:?}", wins.unwrap_or_default());
    }
    let a = io::read_array(path)?;
    if a.shape != grid.shape {
        bail!("{}: volume of shape {:?}, the geometry's volume is {:?} (nz, ny, nx)", path.display(), a.shape, grid.shape);
    }
    if let Some(vs) = a.voxel_size {
        let differs = vs.iter().zip(&grid.voxel_size).any(|(f, g)| (f - g).abs() > 1e-3 * g.abs());
        match (differs, wins) {
            (true, None) => bail!(
                "{}: voxel size {vs:?} mm (z, y, x) in the file, {:?} in the geometry: say which wins with --voxel-size-from file|geometry",
                path.display(),
                grid.voxel_size
            ),
            (true, Some("file")) => grid.voxel_size = vs,
            _ => {}
        }
    }
    Ok(a.data)
}

pub(crate) fn load_proj(path: &Path, g: &Geometry, astra: bool) -> Result<Vec<f32>> {
    let a = io::read_array(path)?;
    let [v, r, c] = g.proj_shape();
    let want = if astra { vec![r, v, c] } else { vec![v, r, c] };
    if a.shape != want {
        let order = if astra { "(rows, views, cols)" } else { "(views, rows, cols)" };
        bail!("{}: projections of shape {:?}, the geometry needs {want:?} {order}", path.display(), a.shape);
    }
    Ok(if astra { swap01(&a.data, r, v, c) } else { a.data })
}

/// (a, b, c) -> (b, a, c)
fn swap01(x: &[f32], a: usize, b: usize, c: usize) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    for i in 0..a {
        for j in 0..b {
            y[(j * a + i) * c..(j * a + i + 1) * c].copy_from_slice(&x[(i * b + j) * c..(i * b + j + 1) * c]);
        }
    }
    y
}

/// Writes the volume and its preview into `outs`: if the preview fails, the volume goes too.
pub(crate) fn write_volume(outs: &mut Outputs, path: &Path, grid: &VolumeGrid, data: &[f32], preview_path: Option<&Path>) -> Result<()> {
    outs.write(path, |p| io::write_array(p, &grid.shape, data, grid.voxel_size))?;
    if let Some(p) = preview_path {
        outs.write(p, |p| preview::write(p, grid.shape, grid.voxel_size, &[data]))?;
    }
    Ok(())
}

/// The volume and its preview, both or neither.
pub(crate) fn save_volume(path: &Path, grid: &VolumeGrid, data: &[f32], preview_path: Option<&Path>) -> Result<()> {
    let mut outs = Outputs::default();
    write_volume(&mut outs, path, grid, data, preview_path)?;
    outs.commit();
    Ok(())
}

/// A volume output and its optional preview, checked before the work.
pub(crate) fn check_volume_outputs(output: &Path, preview: Option<&Path>) -> Result<()> {
    Ok(output::check_all(&[(Some(output), Kind::Volume), (preview, Kind::Png)])?)
}

pub fn phantom(a: PhantomArgs) -> Result<()> {
    check_volume_outputs(&a.output, a.preview.as_deref())?;
    let grid = match (&a.geometry, &a.shape) {
        (Some(g), None) => Geometry::from_file(g)?.volume,
        (None, Some(s)) => {
            let Ok(shape) = <[usize; 3]>::try_from(s.as_slice()) else { bail!("--shape takes three values (z, y, x)") };
            let vs = a.voxel_size.clone().unwrap_or_else(|| phantom::default_voxel_mm(&a.name, shape).to_vec());
            let Ok(vs) = <[f64; 3]>::try_from(vs.as_slice()) else {
                bail!("--shape and --voxel-size take three values (z, y, x)");
            };
            if shape.contains(&0) || vs.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
                bail!("--shape must be positive and --voxel-size positive and finite");
            }
            VolumeGrid { shape, voxel_size: vs, origin: [0.0; 3] }
        }
        _ => bail!("give either --shape or --geometry"),
    };
    let pb = spinner(&format!("phantom {} {:?}", a.name, grid.shape));
    phantom::check_supersample(grid.shape, a.supersample).context("--supersample")?;
    let v = phantom::averaged(&a.name, &grid, a.seed, a.supersample)?;
    pb.finish_and_clear();
    save_volume(&a.output, &grid, &v, a.preview.as_deref())?;
    println!("{} {:?} written to {}", a.name, grid.shape, a.output.display());
    Ok(())
}

pub fn project(a: ProjectArgs) -> Result<()> {
    output::check(&a.output, Kind::Npy)?;
    let g = Geometry::from_file(&a.geometry)?;
    let mut g = g;
    let vol = load_volume(&a.input, &mut g.volume, a.voxel_size_from.as_deref())?;
    let dev = crate::cli::device(&a.device)?;
    let t0 = Instant::now();
    let budget = budget(&dev, a.memory_budget_gb)?;
    let pb = view_bar(g.n_views(), format!("projecting on {}", dev.name()));
    let p = Projector::new(g.clone(), &dev)?;
    let vt = Tensor::from_f32(&vol, &g.volume.shape, DType::F32, &dev)?;
    let mut proj = vec![0f32; g.n_rays()];
    p.forward_to_host(&vt, &mut proj, budget, |done, _| pb.set_position(done as u64))?;
    pb.finish_and_clear();
    if let Some(i0) = a.noise_i0 {
        noise::poisson(&mut proj, g.det_shape[1], i0, a.seed)?;
    }
    let [v, r, c] = g.proj_shape();
    if a.astra_layout {
        io::npy::write(&a.output, &[r, v, c], &swap01(&proj, v, r, c))?;
    } else {
        io::npy::write(&a.output, &[v, r, c], &proj)?;
    }
    println!("{v} views x {r} x {c} written to {} ({:.2} s on {})", a.output.display(), t0.elapsed().as_secs_f64(), dev.name());
    Ok(())
}

pub fn backproject(a: ReconArgs) -> Result<()> {
    check_volume_outputs(&a.output, a.preview.as_deref())?;
    let g = Geometry::from_file(&a.geometry)?;
    let proj = load_proj(&a.input, &g, a.astra_layout)?;
    let dev = crate::cli::device(&a.device)?;
    let budget = budget(&dev, a.memory_budget_gb)?;
    let pb = view_bar(g.n_views(), format!("backprojecting on {}", dev.name()));
    let p = Projector::new(g.clone(), &dev)?;
    let mut vt = Tensor::zeros(&g.volume.shape, DType::F32, &dev)?;
    p.adjoint_from_host(&proj, &mut vt, budget, |done, _| pb.set_position(done as u64))?;
    let v = vt.to_f32_vec()?;
    pb.finish_and_clear();
    save_volume(&a.output, &g.volume, &v, a.preview.as_deref())?;
    println!("A^T y written to {}", a.output.display());
    Ok(())
}

pub fn fbp(a: FbpArgs) -> Result<()> {
    let c = &a.common;
    check_volume_outputs(&c.output, c.preview.as_deref())?;
    let g = Geometry::from_file(&c.geometry)?;
    let proj = load_proj(&c.input, &g, c.astra_layout)?;
    let window = fbp::Window::parse(&a.window)?;
    let name = if g.kind == tomodiff::ct::Kind::Cone { "FDK" } else { "FBP" };
    for w in fbp::warnings(&g)? {
        eprintln!("warning: {name}: {w}");
    }
    let pb = spinner(&format!("{name} on the cpu"));
    let v = fbp::fbp(&g, &proj, window)?;
    pb.finish_and_clear();
    save_volume(&c.output, &g.volume, &v, c.preview.as_deref())?;
    println!("{name} written to {}", c.output.display());
    Ok(())
}

pub fn iterative(a: IterativeArgs) -> Result<()> {
    let c = &a.common;
    check_volume_outputs(&c.output, c.preview.as_deref())?;
    let g = Geometry::from_file(&c.geometry)?;
    let proj = load_proj(&c.input, &g, c.astra_layout)?;
    let dev = crate::cli::device(&c.device)?;
    let p = Projector::new(g.clone(), &dev)?;
    let y = Tensor::from_f32(&proj, &g.proj_shape(), DType::F32, &dev)?;
    let mut x = Tensor::zeros(&g.volume.shape, DType::F32, &dev)?;
    let pb = ProgressBar::new(a.iters as u64);
    pb.set_style(ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed} (eta {eta})").unwrap());
    pb.set_message(format!("{} on {}", a.method, dev.name()));
    let tick = |k: usize, r: f64| {
        pb.set_position(k as u64);
        pb.set_message(format!("{} on {}, residual {r:.4e}", a.method, dev.name()));
    };
    let h = match a.method.as_str() {
        "cgls" => iterative::cgls(&p, &y, &mut x, a.iters, tick)?,
        "sirt" => iterative::sirt(&p, &y, &mut x, a.iters, a.lambda, a.nonneg, tick)?,
        m => bail!("unknown method {m:?}: expected cgls or sirt"),
    };
    pb.finish_and_clear();
    let v = x.to_f32_vec().context("reading the result")?;
    save_volume(&c.output, &g.volume, &v, c.preview.as_deref())?;
    println!(
        "{} x {} written to {}: residual {:.4e} -> {:.4e}",
        a.method,
        h.residuals.len() - 1,
        c.output.display(),
        h.residuals[0],
        h.residuals.last().unwrap()
    );
    Ok(())
}

pub fn metrics(a: MetricsArgs) -> Result<()> {
    output::check_all(&[(a.json.as_deref(), Kind::Json)])?;
    let x = io::read_array(&a.input)?;
    let r = io::read_array(&a.reference)?;
    if x.shape != r.shape || x.shape.len() != 3 {
        bail!("{} has shape {:?}, {} has {:?}: two volumes of one 3D shape are needed", a.input.display(), x.shape, a.reference.display(), r.shape);
    }
    let m = tomodiff::metrics::compare([x.shape[0], x.shape[1], x.shape[2]], &x.data, &r.data)?;
    println!("PSNR {:.2} dB (axial {:.2}, coronal {:.2}, sagittal {:.2})", m.psnr, m.psnr_axial, m.psnr_coronal, m.psnr_sagittal);
    println!("SSIM axial {:.4}, coronal {:.4}, sagittal {:.4}", m.ssim_axial, m.ssim_coronal, m.ssim_sagittal);
    if let Some(j) = a.json {
        io::write_atomic(&j, serde_json::to_string_pretty(&m)?.as_bytes())?;
    }
    Ok(())
}

/// Several volumes side by side at one grey scale: each volume's own preview (`--preview`)
/// spans its own range, which makes a volume without bone look brighter than one with it.
pub fn preview(a: PreviewArgs) -> Result<()> {
    output::check(&a.output, Kind::Png)?;
    let vols = a.inputs.iter().map(|p| io::read_array(p)).collect::<std::result::Result<Vec<_>, _>>()?;
    let (first, shape) = (&a.inputs[0], &vols[0].shape);
    if shape.len() != 3 {
        bail!("{}: a volume (nz, ny, nx) is needed, got shape {shape:?}", first.display());
    }
    if let Some((p, v)) = a.inputs.iter().zip(&vols).find(|(_, v)| &v.shape != shape) {
        bail!("{} has shape {:?}, {} has {shape:?}: the rows need one shape", p.display(), v.shape, first.display());
    }
    let data: Vec<&[f32]> = vols.iter().map(|v| v.data.as_slice()).collect();
    // Files without a voxel size (.npy) are drawn with cubic voxels.
    let vs = vols.iter().find_map(|v| v.voxel_size).unwrap_or([1.0; 3]);
    preview::write(&a.output, [shape[0], shape[1], shape[2]], vs, &data)?;
    let rows = if vols.len() == 1 { "1 row".to_string() } else { format!("{} rows", vols.len()) };
    println!("{rows} written to {}", a.output.display());
    Ok(())
}
