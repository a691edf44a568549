//! `tomodiff eval`: a fixed protocol over held-out procedural volumes (seeds training never
//! draws): sparse-view scans (4, 8, 16 views over the full arc) and limited-angle ones (90 and
//! 120 degrees), parallel and cone beam; FBP/FDK, CGLS and the prior judged by PSNR and SSIM per
//! plane; one Markdown table and a JSON file with every volume's figures (docs/RECONSTRUCTION.md).
use super::heldout::HeldOut;
use super::recon::{baselines, load_model, run_prior, Method, PriorArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use tomodiff::ct::{phantom, Geometry, GeometrySpec, VolumeGrid};
use tomodiff::metrics::{compare, Metrics};

#[derive(Args)]
pub struct EvalArgs {
    /// Held-out volumes per case.
    #[arg(long, default_value_t = 2)]
    volumes: usize,
    /// The phantom: chest (what the shipped prior learned) or thorax (procedural anatomy).
    #[arg(long, default_value = "chest")]
    phantom: String,
    /// Volume shape (z, y, x); the voxel size is the phantom's default for it.
    #[arg(long, value_delimiter = ',', default_value = "64,64,64")]
    shape: Vec<usize>,
    /// Seed of the first held-out volume; volume i has seed + i. Training draws 64-bit seeds from
    /// its own generator, so a fixed range meets none of them in practice.
    #[arg(long, default_value_t = 7_000_000_000)]
    phantom_seed: u64,
    /// Sparse-view cases: views over the full arc (180 degrees parallel, 360 cone); none: the
    /// flag alone.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "4,8,16")]
    views: Vec<usize>,
    /// Limited-angle cases: arcs in degrees, each with --limited-views views (none: the flag
    /// alone).
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "90,120")]
    limited_deg: Vec<f64>,
    /// Views of each limited-angle scan, spread over its arc.
    #[arg(long, default_value_t = 16)]
    limited_views: usize,
    /// Beams: parallel, cone, or both.
    #[arg(long, value_delimiter = ',', default_value = "parallel,cone")]
    beams: Vec<String>,
    /// Incident photons per ray (Poisson noise).
    #[arg(long, default_value_t = 1e5)]
    i0: f64,
    /// CGLS iterations of the baseline.
    #[arg(long, default_value_t = 20)]
    cgls_iters: usize,
    /// FBP/FDK and CGLS only.
    #[arg(long)]
    no_prior: bool,
    /// A prior to judge instead of the shipped one (safetensors, config.json beside them).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// A preset (paper, small, tiny) or a JSON config for --weights.
    #[arg(long)]
    config: Option<String>,
    /// The report: a Markdown table; the JSON with every volume's figures goes beside it.
    #[arg(long, default_value = "eval.md")]
    output: PathBuf,
    /// A folder (made if missing) for one PNG per scan: the first volume's truth, then each
    /// method's reconstruction, as rows of middle slices (docs/CT.md, previews).
    #[arg(long)]
    previews: Option<PathBuf>,
    #[command(flatten)]
    prior: PriorArgs,
}

#[derive(Clone, Copy, PartialEq)]
enum BeamKind {
    Parallel,
    Cone,
}

impl BeamKind {
    fn parse(s: &str) -> Result<BeamKind> {
        match s {
            "parallel" => Ok(BeamKind::Parallel),
            "cone" => Ok(BeamKind::Cone),
            b => bail!("--beams: unknown beam {b:?}: expected parallel or cone"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            BeamKind::Parallel => "parallel",
            BeamKind::Cone => "cone",
        }
    }

    /// The full arc of a sparse-view scan, degrees.
    fn full_arc(self) -> f64 {
        match self {
            BeamKind::Parallel => 180.0,
            BeamKind::Cone => 360.0,
        }
    }
}

/// One scan of the protocol.
#[derive(PartialEq)]
struct Case {
    beam: BeamKind,
    views: usize,
    arc_deg: f64,
}

impl Case {
    fn name(&self) -> String {
        format!("{} {} views / {} deg", self.beam.name(), self.views, self.arc_deg)
    }

    /// The case as a file name, e.g. `cone-8views-360deg`.
    fn file_stem(&self) -> String {
        format!("{}-{}views-{}deg", self.beam.name(), self.views, self.arc_deg)
    }

    /// The scan of `grid`: the detector covers the volume at the grid's voxel size; the cone
    /// beam's source sits 3 widths from the centre, the detector 1.5 widths behind it.
    fn geometry(&self, grid: &VolumeGrid) -> Result<Geometry> {
        let [nz, ny, nx] = grid.shape;
        let n = ny.max(nx);
        let s = grid.voxel_size[2];
        let spec = match self.beam {
            BeamKind::Parallel => GeometrySpec::parallel(grid.shape, [nz, (n as f64 * 1.5).ceil() as usize], self.views).det_spacing([grid.voxel_size[0], s]),
            BeamKind::Cone => {
                let w = n as f64 * s;
                GeometrySpec::cone(grid.shape, [(3 * nz).div_ceil(2) + 8, 2 * n], self.views, 3.0 * w, 1.5 * w).det_spacing([1.5 * grid.voxel_size[0], 1.5 * s])
            }
        };
        Ok(Geometry::new(&spec.voxel_size(grid.voxel_size).arc_deg(self.arc_deg, 0.0))?)
    }
}

fn cases(a: &EvalArgs) -> Result<Vec<Case>> {
    let mut out = Vec::new();
    for beam in &a.beams {
        let beam = BeamKind::parse(beam)?;
        out.extend(a.views.iter().map(|&views| Case { beam, views, arc_deg: beam.full_arc() }));
        out.extend(a.limited_deg.iter().map(|&arc_deg| Case { beam, views: a.limited_views, arc_deg }));
    }
    // A scan named twice (--views 8,8, --beams cone,cone) runs once: one row, one preview file.
    let mut unique: Vec<Case> = Vec::new();
    for c in out {
        if !unique.contains(&c) {
            unique.push(c);
        }
    }
    let out = unique;
    if out.is_empty() {
        bail!("no scans to run: give --views or --limited-deg");
    }
    if a.views.contains(&0) {
        bail!("--views: views must be positive, got 0");
    }
    if !a.limited_deg.is_empty() && a.limited_views == 0 {
        bail!("--limited-views: views must be positive, got 0");
    }
    if let Some(d) = a.limited_deg.iter().find(|&&d| !(d > 0.0 && d <= 360.0)) {
        bail!("--limited-deg: arcs must be in (0, 360] degrees, got {d}");
    }
    Ok(out)
}

/// Mean and sample standard deviation.
fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 { v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (m, var.sqrt())
}

pub fn run(a: EvalArgs) -> Result<()> {
    use tomodiff::io::output::{check_all, Kind};
    let json_path = a.output.with_extension("json");
    check_all(&[(Some(&a.output), Kind::Markdown), (Some(&json_path), Kind::Json)])?;
    if !["chest", "thorax"].contains(&a.phantom.as_str()) {
        bail!("--phantom {:?}: expected chest or thorax", a.phantom);
    }
    let Ok(shape) = <[usize; 3]>::try_from(a.shape.as_slice()) else { bail!("--shape takes three values (z, y, x)") };
    if shape.contains(&0) || a.volumes == 0 {
        bail!("--shape and --volumes must be positive");
    }
    if !(a.i0.is_finite() && a.i0 >= 1.0) {
        bail!("--i0 {}: the incident photon count must be at least 1", a.i0);
    }
    let Some(last_seed) = a.phantom_seed.checked_add(a.volumes as u64 - 1) else { bail!("--phantom-seed {}: the volumes' seeds overflow", a.phantom_seed) };
    let cases = cases(&a)?;
    if !a.no_prior {
        a.prior.options()?; // the prior's settings, before the phantoms and baselines
    }
    if let Some(d) = &a.previews {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let model = if a.no_prior { None } else { Some(load_model(a.weights.as_deref(), a.config.as_deref())?) };
    let dev = crate::cli::device(a.prior.device_name())?;
    // As training draws them: the chest spans its grid, the thorax is in mm with its body in view.
    let grid = VolumeGrid { shape, voxel_size: phantom::default_voxel_mm(&a.phantom, shape), origin: [0.0; 3] };
    let vols: Vec<HeldOut> = (a.phantom_seed..=last_seed).map(|seed| HeldOut::new(&a.phantom, &grid, seed)).collect::<Result<_, _>>()?;
    let mut rows = Vec::new();
    let mut pictures: Vec<(PathBuf, Vec<Vec<f32>>)> = Vec::new();
    for case in &cases {
        let g = case.geometry(&grid)?;
        let mut per: Vec<PerMethod> = Vec::new();
        for (i, vol) in vols.iter().enumerate() {
            let proj = vol.scan(&g, a.i0)?;
            let [fbp, cgls] = baselines(&g, &proj, a.cgls_iters, &dev)?;
            let mut methods = vec![fbp, cgls];
            if let Some((cfg, w, _)) = &model {
                let (mu, stats) = run_prior(cfg, w, &g, &proj, Some(&methods[0].volume), &a.prior)?;
                methods.push(Method { name: "prior".into(), key: "diffusion", volume: mu, seconds: stats.sample.total_s });
            }
            if let (Some(d), 0) = (&a.previews, i) {
                let vols = std::iter::once(vol.truth.clone()).chain(methods.iter().map(|m| m.volume.clone())).collect();
                pictures.push((d.join(case.file_stem() + ".png"), vols));
            }
            for me in methods {
                let m = compare(shape, &me.volume, &vol.truth)?;
                eprintln!("{} volume {}: {} PSNR {:.2} dB, SSIM axial {:.3}, {:.1} s", case.name(), i + 1, me.name, m.psnr, m.ssim_axial, me.seconds);
                match per.iter_mut().find(|p| p.key == me.key) {
                    Some(p) => {
                        p.metrics.push(m);
                        p.seconds.push(me.seconds);
                    }
                    None => per.push(PerMethod { key: me.key, name: me.name, metrics: vec![m], seconds: vec![me.seconds] }),
                }
            }
        }
        rows.push((case, per));
    }
    let (table, json) = report(&a, model.as_ref().map(|m| m.2.as_str()), &rows);
    print!("{table}");
    let mut outs = tomodiff::io::output::Outputs::default();
    let json = serde_json::to_string_pretty(&json)?;
    outs.write(&a.output, |p| tomodiff::io::write_atomic(p, table.as_bytes()))?;
    outs.write(&json_path, |p| tomodiff::io::write_atomic(p, json.as_bytes()))?;
    for (path, vols) in &pictures {
        let vols: Vec<&[f32]> = vols.iter().map(|v| v.as_slice()).collect();
        outs.write(path, |p| tomodiff::io::preview::write(p, shape, grid.voxel_size, &vols))?;
    }
    outs.commit();
    println!("report written to {} and {}", a.output.display(), json_path.display());
    Ok(())
}

/// One method's figures on a case, one entry per volume.
struct PerMethod {
    key: &'static str,
    name: String,
    metrics: Vec<Metrics>,
    /// Wall time of the method on each volume.
    seconds: Vec<f64>,
}

type Rows<'a> = [(&'a Case, Vec<PerMethod>)];

/// The Markdown table (mean +- sd over the volumes, mean wall time per volume) and the JSON with
/// every volume's metrics and seconds; `prior` names the prior's weights when it ran.
fn report(a: &EvalArgs, prior: Option<&str>, rows: &Rows) -> (String, serde_json::Value) {
    let mut t = format!(
        "{} held-out {} volumes {:?} (seeds {}..{}), I0 = {:.0e}, CGLS {} iterations; PSNR in dB, mean +- sd.\n\n",
        a.volumes,
        a.phantom,
        a.shape,
        a.phantom_seed,
        a.phantom_seed.saturating_add(a.volumes as u64 - 1),
        a.i0,
        a.cgls_iters
    );
    t += "| scan | method | PSNR | PSNR axial | PSNR coronal | PSNR sagittal | SSIM axial | SSIM coronal | SSIM sagittal | seconds |\n";
    t += "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
    let mut cases_json = Vec::new();
    for (case, per) in rows {
        let mut methods_json = serde_json::Map::new();
        for PerMethod { key, name, metrics: ms, seconds } in per {
            let col = |f: fn(&Metrics) -> f64, digits: usize| {
                let (m, s) = mean_sd(&ms.iter().map(f).collect::<Vec<_>>());
                format!("{m:.digits$} +- {s:.digits$}")
            };
            t += &format!(
                "| {} | {name} | {} | {} | {} | {} | {} | {} | {} | {:.1} |\n",
                case.name(),
                col(|m| m.psnr, 2),
                col(|m| m.psnr_axial, 2),
                col(|m| m.psnr_coronal, 2),
                col(|m| m.psnr_sagittal, 2),
                col(|m| m.ssim_axial, 3),
                col(|m| m.ssim_coronal, 3),
                col(|m| m.ssim_sagittal, 3),
                mean_sd(seconds).0
            );
            methods_json.insert(key.to_string(), serde_json::json!({ "name": name, "volumes": ms, "seconds": seconds }));
        }
        cases_json.push(serde_json::json!({ "beam": case.beam.name(), "views": case.views, "arc_deg": case.arc_deg, "methods": methods_json }));
    }
    let json = serde_json::json!({
        "phantom": a.phantom, "shape": a.shape, "phantom_seed": a.phantom_seed, "volumes": a.volumes, "i0": a.i0,
        "cgls_iters": a.cgls_iters, "prior_settings": prior.map(|name| a.prior.settings(name)), "cases": cases_json,
    });
    (t, json)
}
