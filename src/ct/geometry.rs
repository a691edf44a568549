//! Scan geometry: the JSON document of docs/CT.md, validated, and turned into one
//! vector record per view, which is all the projectors see.
//!
//! Conventions (world in mm, right-handed, rotation axis z):
//! - Volume arrays are (nz, ny, nx); `shape`, `voxel_size` and `origin` are given in that array
//!   order (z, y, x). Voxel (k, j, i) has its centre at
//!   origin + ((i + 1/2) sx - nx sx / 2, (j + 1/2) sy - ny sy / 2, (k + 1/2) sz - nz sz / 2).
//! - Projections are (n_views, n_rows, n_cols); `det_shape` is [rows, cols], `det_spacing` and
//!   `det_offset` are [along rows (v), along cols (u)].
//! - Circular scans, view angle b: the source is at source_origin (cos b, sin b, 0); the detector
//!   centre at -origin_detector (cos b, sin b, 0) + offsets; u = du (-sin b, cos b, 0) points from
//!   column c to c+1, v = dv (0, 0, 1) from row r to r+1. Parallel rays travel along
//!   -(cos b, sin b, 0) through the pixel centres of a detector centred on the axis. Fan rays stay
//!   in the z-plane of their detector row (the source is raised to the row).
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// A world vector (x, y, z) in f64: a point or a step in mm, or a direction.
pub type V3 = [f64; 3];

/// The validated volume grid: (nz, ny, nx) voxels of (sz, sy, sx) mm, centred at `origin`.
/// Volumes on it are f32 arrays in that C order, (z, y, x); voxel centres as `voxel_centre`.
#[derive(Clone, Debug, PartialEq)]
pub struct VolumeGrid {
    /// (nz, ny, nx)
    pub shape: [usize; 3],
    /// (sz, sy, sx) in mm
    pub voxel_size: [f64; 3],
    /// Centre offset (oz, oy, ox) in mm
    pub origin: [f64; 3],
}

impl VolumeGrid {
    /// Number of voxels, nz ny nx: the length of a volume array.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// Whether the grid holds no voxel (never true of a validated geometry's grid).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// World (x, y, z) of the corner of voxel (0, 0, 0) with the smallest coordinates.
    pub fn corner(&self) -> V3 {
        let [nz, ny, nx] = self.shape;
        let [sz, sy, sx] = self.voxel_size;
        let [oz, oy, ox] = self.origin;
        [ox - nx as f64 * sx / 2.0, oy - ny as f64 * sy / 2.0, oz - nz as f64 * sz / 2.0]
    }
    /// Voxel size as world (sx, sy, sz).
    pub fn step_xyz(&self) -> V3 {
        [self.voxel_size[2], self.voxel_size[1], self.voxel_size[0]]
    }
    /// Voxel counts as world (nx, ny, nz).
    pub fn n_xyz(&self) -> [usize; 3] {
        [self.shape[2], self.shape[1], self.shape[0]]
    }
    /// World (x, y, z) of the centre of voxel (k, j, i).
    pub fn voxel_centre(&self, k: usize, j: usize, i: usize) -> V3 {
        let c = self.corner();
        let s = self.step_xyz();
        [c[0] + (i as f64 + 0.5) * s[0], c[1] + (j as f64 + 0.5) * s[1], c[2] + (k as f64 + 0.5) * s[2]]
    }
}

/// One view as vectors. Pixel (r, c) centre: det + (c - (cols-1)/2) u + (r - (rows-1)/2) v.
/// Divergent beams: the ray runs from src + (r - (rows-1)/2) src_row to the pixel centre.
/// Parallel beams: `src` is the ray direction and the ray passes through the pixel centre.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct View {
    /// Divergent beams: the source position, mm; parallel beams: the ray direction (non-zero).
    pub src: V3,
    /// Source shift per row from the detector's centre row, mm: `v` for fan scans, else zero.
    pub src_row: V3,
    /// Detector centre (world x, y, z) in mm; between pixels where a dimension is even.
    pub det: V3,
    /// Step from column c to c + 1, mm (its length is the column pitch).
    pub u: V3,
    /// Step from row r to r + 1, mm (its length is the row pitch).
    pub v: V3,
}

/// Beam shape as the projectors see it: decides whether `View::src` is a direction or a point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Beam {
    /// Parallel and parallel_vec: `src` is the ray direction; rays pass through the pixel centres.
    Parallel,
    /// Fan, cone and cone_vec: rays run from the (row-shifted) source point to the pixel centre.
    Divergent,
}

/// Scan type, the document's `type`; FBP/FDK take the circular three and refuse vector forms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Circular parallel beam (`parallel`); reconstructed by FBP.
    Parallel,
    /// Circular fan beam, each detector row its own fan in its z-plane (`fan`); FBP.
    Fan,
    /// Circular cone beam, one source point and a flat detector (`cone`); FDK.
    Cone,
    /// Parallel beam given as one vector record per view (`parallel_vec`).
    ParallelVec,
    /// Cone beam given as one vector record per view (`cone_vec`).
    ConeVec,
}

/// A validated scan geometry: the volume grid and one vector record per view, all the projectors
/// see (conventions at the top of this file and in docs/CT.md). Built by `from_json`,
/// `from_file` or `new(&GeometrySpec)`; errors are `Error::Geometry` naming the field.
#[derive(Clone, Debug)]
pub struct Geometry {
    /// The volume grid: shape (nz, ny, nx), voxel size and origin in mm.
    pub volume: VolumeGrid,
    /// Scan type from the document; FBP/FDK choose their method by it.
    pub kind: Kind,
    /// Parallel or divergent: how each `View` is read.
    pub beam: Beam,
    /// (rows, cols)
    pub det_shape: [usize; 2],
    /// One vector record per view, in the document's order (the projections' first axis).
    pub views: Vec<View>,
    /// View angles in degrees for circular scans (FBP/FDK need them); None for vector forms.
    pub angles_deg: Option<Vec<f64>>,
    /// Source to axis and axis to detector distances for circular divergent scans.
    pub source_origin: f64,
    /// Axis to detector centre distance in mm (fan, cone); 0 for parallel and vector forms.
    pub origin_detector: f64,
    /// Detector spacing (rows, cols) in mm for circular scans.
    pub det_spacing: [f64; 2],
    /// Detector shift (rows (v), cols (u)) in mm for circular scans; [0, 0] for vector forms.
    pub det_offset: [f64; 2],
}

// ---- the document: JSON, or built in code ----

/// A scan geometry as the JSON document of docs/CT.md ("Geometry"), for building one in code:
/// `Geometry::new(&spec)` validates it exactly as `Geometry::from_json` does. Lengths in mm,
/// angles in degrees, arrays in (z, y, x) and (rows, cols) order.
///
/// ```text
/// let spec = GeometrySpec::cone([64, 64, 64], [104, 128], 8, 192.0, 96.0).det_spacing([1.5, 1.5]);
/// let g = Geometry::new(&spec)?;
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeometrySpec {
    /// The reconstructed grid (JSON `volume`).
    pub volume: VolumeSpec,
    /// The scan: type, detector and views (JSON `scan`).
    pub scan: ScanSpec,
}

/// The reconstructed grid: `shape` (nz, ny, nx), `voxel_size` (sz, sy, sx) in mm (default 1),
/// `origin` the grid centre's offset (oz, oy, ox) in mm (default 0).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    /// (nz, ny, nx): each 1 to 2^20, at most 2^34 voxels in all.
    pub shape: [i64; 3],
    /// (sz, sy, sx) in mm, each positive; default [1, 1, 1].
    #[serde(default = "ones")]
    pub voxel_size: [f64; 3],
    /// The grid centre's offset (oz, oy, ox) in mm, finite; default [0, 0, 0].
    #[serde(default)]
    pub origin: [f64; 3],
}

fn ones() -> [f64; 3] {
    [1.0; 3]
}

/// The scan: `kind` (JSON `type`) is parallel, fan or cone (circular, angles from `n_views`,
/// `arc_deg`, `start_deg` or listed in `angles_deg`), or parallel_vec / cone_vec (one `views`
/// record per view). Unset options take the defaults of docs/CT.md.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanSpec {
    /// JSON `type`: parallel, fan, cone, parallel_vec or cone_vec.
    #[serde(rename = "type")]
    pub kind: String,
    /// (rows, cols)
    pub det_shape: [i64; 2],
    /// Pixel pitch (rows, cols) in mm; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub det_spacing: Option<[f64; 2]>,
    /// Detector shift (rows, cols) in mm; default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub det_offset: Option<[f64; 2]>,
    /// Number of views at start_deg + arc_deg i / n_views, i = 0..n_views (circular scans; required
    /// unless `angles_deg` is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_views: Option<i64>,
    /// Default 180 for parallel, 360 for fan and cone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arc_deg: Option<f64>,
    /// Angle of the first view in degrees; default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_deg: Option<f64>,
    /// Explicit view angles in degrees, any order; replaces `n_views`, `arc_deg` and `start_deg`
    /// (giving both is an error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub angles_deg: Option<Vec<f64>>,
    /// Source to rotation axis distance in mm, positive; required for fan and cone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_origin: Option<f64>,
    /// Rotation axis to detector centre distance in mm; required for fan and cone, with
    /// source_origin + origin_detector > 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_detector: Option<f64>,
    /// One record per view; required for parallel_vec and cone_vec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub views: Option<Vec<ViewSpec>>,
}

/// One view of a vector geometry, world (x, y, z) in mm: `source` (cone_vec) or the ray direction
/// `ray` (parallel_vec), the detector centre `det`, and the pixel steps `u` (column c to c + 1) and
/// `v` (row r to r + 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewSpec {
    /// Source position; cone_vec records only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<V3>,
    /// Ray direction (non-zero, any length); parallel_vec records only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ray: Option<V3>,
    /// Detector centre.
    pub det: V3,
    /// Step from column c to c + 1 (its length is the column pitch).
    pub u: V3,
    /// Step from row r to r + 1 (its length is the row pitch).
    pub v: V3,
}

/// ASTRA's 3D vector geometries, 12 numbers per view (ASTRA's documentation of `parallel3d_vec`
/// and `cone_vec`): the ray direction or source, the detector centre, u and v, each (x, y, z).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AstraVec {
    /// `parallel3d_vec`: (ray, d, u, v); becomes a parallel_vec geometry.
    Parallel3dVec,
    /// `cone_vec`: (src, d, u, v); becomes a cone_vec geometry.
    ConeVec,
}

impl GeometrySpec {
    fn circular(kind: &str, shape: [usize; 3], det_shape: [usize; 2], n_views: usize) -> GeometrySpec {
        GeometrySpec {
            volume: VolumeSpec { shape: shape.map(|v| v as i64), voxel_size: ones(), origin: [0.0; 3] },
            scan: ScanSpec { kind: kind.into(), det_shape: det_shape.map(|v| v as i64), n_views: Some(n_views as i64), ..ScanSpec::default() },
        }
    }

    /// A circular parallel-beam scan of a `shape` (nz, ny, nx) volume: `n_views` over 180 degrees.
    pub fn parallel(shape: [usize; 3], det_shape: [usize; 2], n_views: usize) -> GeometrySpec {
        GeometrySpec::circular("parallel", shape, det_shape, n_views)
    }

    /// A circular divergent-beam scan of `kind` (fan, cone) with its distances in mm.
    fn divergent(kind: &str, shape: [usize; 3], det_shape: [usize; 2], n_views: usize, source_origin: f64, origin_detector: f64) -> GeometrySpec {
        let mut s = GeometrySpec::circular(kind, shape, det_shape, n_views);
        (s.scan.source_origin, s.scan.origin_detector) = (Some(source_origin), Some(origin_detector));
        s
    }

    /// A circular fan-beam scan (each detector row its own fan): `n_views` over 360 degrees.
    pub fn fan(shape: [usize; 3], det_shape: [usize; 2], n_views: usize, source_origin: f64, origin_detector: f64) -> GeometrySpec {
        GeometrySpec::divergent("fan", shape, det_shape, n_views, source_origin, origin_detector)
    }

    /// A circular cone-beam scan: `n_views` over 360 degrees, distances in mm.
    pub fn cone(shape: [usize; 3], det_shape: [usize; 2], n_views: usize, source_origin: f64, origin_detector: f64) -> GeometrySpec {
        GeometrySpec::divergent("cone", shape, det_shape, n_views, source_origin, origin_detector)
    }

    /// A vector geometry from ASTRA's 12 numbers per view; `shape` (nz, ny, nx) of 1 mm voxels
    /// centred on the origin unless changed with `voxel_size` / `origin`.
    pub fn astra_vectors(kind: AstraVec, shape: [usize; 3], det_shape: [usize; 2], vectors: &[[f64; 12]]) -> GeometrySpec {
        let v3 = |r: &[f64; 12], i: usize| -> V3 { [r[i], r[i + 1], r[i + 2]] };
        let views = vectors
            .iter()
            .map(|r| {
                let (src, ray) = match kind {
                    AstraVec::Parallel3dVec => (None, Some(v3(r, 0))),
                    AstraVec::ConeVec => (Some(v3(r, 0)), None),
                };
                ViewSpec { source: src, ray, det: v3(r, 3), u: v3(r, 6), v: v3(r, 9) }
            })
            .collect();
        let kind = match kind {
            AstraVec::Parallel3dVec => "parallel_vec",
            AstraVec::ConeVec => "cone_vec",
        };
        GeometrySpec {
            volume: VolumeSpec { shape: shape.map(|v| v as i64), voxel_size: ones(), origin: [0.0; 3] },
            scan: ScanSpec { kind: kind.into(), det_shape: det_shape.map(|v| v as i64), views: Some(views), ..ScanSpec::default() },
        }
    }

    /// Voxel size (sz, sy, sx) in mm.
    pub fn voxel_size(mut self, s: [f64; 3]) -> GeometrySpec {
        self.volume.voxel_size = s;
        self
    }

    /// The grid centre's offset (oz, oy, ox) in mm.
    pub fn origin(mut self, o: [f64; 3]) -> GeometrySpec {
        self.volume.origin = o;
        self
    }

    /// Detector pixel pitch (rows, cols) in mm (circular scans).
    pub fn det_spacing(mut self, s: [f64; 2]) -> GeometrySpec {
        self.scan.det_spacing = Some(s);
        self
    }

    /// Detector shift (rows, cols) in mm (circular scans; a displaced detector for half-fan).
    pub fn det_offset(mut self, o: [f64; 2]) -> GeometrySpec {
        self.scan.det_offset = Some(o);
        self
    }

    /// The arc the views spread over, from `start_deg` (circular scans with `n_views`).
    pub fn arc_deg(mut self, arc: f64, start_deg: f64) -> GeometrySpec {
        (self.scan.arc_deg, self.scan.start_deg) = (Some(arc), Some(start_deg));
        self
    }

    /// Explicit view angles in degrees, instead of `n_views` spread over an arc.
    pub fn angles_deg(mut self, angles: Vec<f64>) -> GeometrySpec {
        (self.scan.n_views, self.scan.arc_deg, self.scan.start_deg, self.scan.angles_deg) = (None, None, None, Some(angles));
        self
    }

    /// The JSON document (what `Geometry::from_json` reads).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a geometry spec serialises")
    }
}

fn bad(field: &str, msg: impl std::fmt::Display) -> Error {
    Error::Geometry(format!("{field}: {msg}"))
}

fn positive(field: &str, v: f64) -> Result<f64> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(bad(field, format!("must be a positive number, got {v}")))
    }
}

fn finite(field: &str, v: &[f64]) -> Result<()> {
    match v.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(bad(&format!("{field}[{i}]"), "must be finite")),
        None => Ok(()),
    }
}

fn count(field: &str, v: i64) -> Result<usize> {
    if v > 0 && v <= 1 << 20 {
        Ok(v as usize)
    } else {
        Err(bad(field, format!("must be a positive count, got {v}")))
    }
}

impl Geometry {
    /// A geometry from its JSON document (docs/CT.md, "Geometry"). Errors: `Error::Geometry`
    /// naming the field and what it must be.
    pub fn from_json(text: &str) -> Result<Geometry> {
        let doc: GeometrySpec = serde_json::from_str(text).map_err(|e| Error::Geometry(e.to_string()))?;
        Geometry::new(&doc)
    }

    /// A geometry built in code, validated as `from_json` validates the document.
    pub fn new(doc: &GeometrySpec) -> Result<Geometry> {
        let v = &doc.volume;
        let shape = [count("volume.shape[0]", v.shape[0])?, count("volume.shape[1]", v.shape[1])?, count("volume.shape[2]", v.shape[2])?];
        for (i, s) in v.voxel_size.iter().enumerate() {
            positive(&format!("volume.voxel_size[{i}]"), *s)?;
        }
        finite("volume.origin", &v.origin)?;
        let volume = VolumeGrid { shape, voxel_size: v.voxel_size, origin: v.origin };
        let s = &doc.scan;
        let det_shape = [count("scan.det_shape[0]", s.det_shape[0])?, count("scan.det_shape[1]", s.det_shape[1])?];
        let kind = match s.kind.as_str() {
            "parallel" => Kind::Parallel,
            "fan" => Kind::Fan,
            "cone" => Kind::Cone,
            "parallel_vec" => Kind::ParallelVec,
            "cone_vec" => Kind::ConeVec,
            other => return Err(bad("scan.type", format!("unknown type {other:?}: expected parallel, fan, cone, parallel_vec or cone_vec"))),
        };
        // Arrays of these sizes are allocated later: refuse what no machine holds (2^34 float32
        // values are 64 GiB), instead of aborting in the allocation.
        const MAX_VALUES: usize = 1 << 34;
        let voxels = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).filter(|&n| n <= MAX_VALUES);
        voxels.ok_or_else(|| bad("volume.shape", format!("{shape:?} holds more than 2^34 voxels (64 GiB as float32)")))?;
        unused_fields(&kind, s)?;
        let g = match kind {
            Kind::Parallel | Kind::Fan | Kind::Cone => circular(volume, kind, det_shape, s)?,
            Kind::ParallelVec | Kind::ConeVec => vectors(volume, kind, det_shape, s)?,
        };
        let rays = g.views.len().checked_mul(det_shape[0] * det_shape[1]).filter(|&n| n <= MAX_VALUES);
        rays.ok_or_else(|| bad("scan", format!("{} views of {det_shape:?} pixels are more than 2^34 rays (64 GiB as float32)", g.views.len())))?;
        g.validate()?;
        Ok(g)
    }

    /// A geometry from a JSON document file (docs/CT.md). Errors: `Error::Io` when the file cannot
    /// be read; `Error::Geometry`, prefixed with the path, as for `from_json`.
    pub fn from_file(path: &std::path::Path) -> Result<Geometry> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Geometry::from_json(&text).map_err(|e| match e {
            Error::Geometry(m) => Error::Geometry(format!("{}: {m}", path.display())),
            e => e,
        })
    }

    /// Number of views, the projections' first dimension.
    pub fn n_views(&self) -> usize {
        self.views.len()
    }
    /// Shape of the projection array: (n_views, rows, cols).
    pub fn proj_shape(&self) -> [usize; 3] {
        [self.views.len(), self.det_shape[0], self.det_shape[1]]
    }
    /// Number of rays, one per detector pixel per view: the length of a projection array.
    pub fn n_rays(&self) -> usize {
        self.views.len() * self.det_shape[0] * self.det_shape[1]
    }

    /// Ray (origin, direction, t range) of pixel (r, c) of view `vi`; points are origin + t dir.
    pub fn ray(&self, vi: usize, r: usize, c: usize) -> (V3, V3, f64, f64) {
        let w = &self.views[vi];
        let fc = c as f64 - (self.det_shape[1] as f64 - 1.0) / 2.0;
        let fr = r as f64 - (self.det_shape[0] as f64 - 1.0) / 2.0;
        let p: V3 = std::array::from_fn(|a| w.det[a] + fc * w.u[a] + fr * w.v[a]);
        match self.beam {
            Beam::Parallel => (p, w.src, f64::NEG_INFINITY, f64::INFINITY),
            Beam::Divergent => {
                let o: V3 = std::array::from_fn(|a| w.src[a] + fr * w.src_row[a]);
                (o, std::array::from_fn(|a| p[a] - o[a]), 0.0, 1.0)
            }
        }
    }

    fn validate(&self) -> Result<()> {
        let (lo, hi) = self.box_bounds();
        for (i, w) in self.views.iter().enumerate() {
            for (name, x) in [("source", w.src), ("det", w.det), ("u", w.u), ("v", w.v)] {
                finite(&format!("scan view {i} {name}"), &x)?;
            }
            if self.beam == Beam::Divergent && (0..3).all(|a| w.src[a] > lo[a] && w.src[a] < hi[a]) {
                return Err(bad(&format!("scan view {i}"), "the source lies inside the volume"));
            }
            if self.beam == Beam::Parallel && w.src.iter().all(|x| *x == 0.0) {
                return Err(bad(&format!("scan view {i} ray"), "the ray direction is zero"));
            }
        }
        let [rows, cols] = self.det_shape;
        for vi in 0..self.views.len() {
            for r in 0..rows {
                for c in 0..cols {
                    if crate::ct::siddon::clip(self, self.ray(vi, r, c)).is_some() {
                        return Ok(());
                    }
                }
            }
        }
        Err(Error::Geometry("no ray of the scan crosses the volume: check distances, detector size and volume origin".into()))
    }

    /// World (x, y, z) bounds of the volume box.
    pub fn box_bounds(&self) -> (V3, V3) {
        let lo = self.volume.corner();
        let s = self.volume.step_xyz();
        let n = self.volume.n_xyz();
        (lo, std::array::from_fn(|a| lo[a] + n[a] as f64 * s[a]))
    }
}

/// Refuses scan fields that the scan type does not read (a fan's distances on a parallel scan,
/// circular angles on a vector geometry): a document that says more than it means is a mistake
/// to name, not to ignore.
fn unused_fields(kind: &Kind, s: &ScanSpec) -> Result<()> {
    let given = [
        ("det_spacing", s.det_spacing.is_some()),
        ("det_offset", s.det_offset.is_some()),
        ("n_views", s.n_views.is_some()),
        ("arc_deg", s.arc_deg.is_some()),
        ("start_deg", s.start_deg.is_some()),
        ("angles_deg", s.angles_deg.is_some()),
        ("source_origin", s.source_origin.is_some()),
        ("origin_detector", s.origin_detector.is_some()),
        ("views", s.views.is_some()),
    ];
    let read: &[&str] = match kind {
        Kind::Parallel => &["det_spacing", "det_offset", "n_views", "arc_deg", "start_deg", "angles_deg"],
        Kind::Fan | Kind::Cone => &["det_spacing", "det_offset", "n_views", "arc_deg", "start_deg", "angles_deg", "source_origin", "origin_detector"],
        Kind::ParallelVec | Kind::ConeVec => &["views"],
    };
    match given.iter().find(|(name, set)| *set && !read.contains(name)) {
        Some((name, _)) => Err(bad(&format!("scan.{name}"), format!("does not apply to a {} scan (it reads {})", s.kind, read.join(", ")))),
        None => Ok(()),
    }
}

fn circular(volume: VolumeGrid, kind: Kind, det_shape: [usize; 2], s: &ScanSpec) -> Result<Geometry> {
    let spacing = s.det_spacing.unwrap_or([1.0, 1.0]);
    positive("scan.det_spacing[0]", spacing[0])?;
    positive("scan.det_spacing[1]", spacing[1])?;
    let offset = s.det_offset.unwrap_or([0.0, 0.0]);
    finite("scan.det_offset", &offset)?;
    let angles = match &s.angles_deg {
        Some(a) => {
            if s.n_views.is_some() || s.arc_deg.is_some() || s.start_deg.is_some() {
                return Err(bad("scan.angles_deg", "give either angles_deg or n_views/arc_deg/start_deg, not both"));
            }
            if a.is_empty() {
                return Err(bad("scan.angles_deg", "is empty"));
            }
            finite("scan.angles_deg", a)?;
            a.clone()
        }
        None => {
            let n = count("scan.n_views", s.n_views.ok_or_else(|| bad("scan.n_views", "missing (or give angles_deg)"))?)?;
            let arc = s.arc_deg.unwrap_or(if kind == Kind::Parallel { 180.0 } else { 360.0 });
            let start = s.start_deg.unwrap_or(0.0);
            finite("scan.arc_deg", &[arc, start])?;
            (0..n).map(|i| start + arc * i as f64 / n as f64).collect()
        }
    };
    let (so, od) = if kind == Kind::Parallel {
        (0.0, 0.0)
    } else {
        let so = positive("scan.source_origin", s.source_origin.ok_or_else(|| bad("scan.source_origin", "missing"))?)?;
        let od = s.origin_detector.ok_or_else(|| bad("scan.origin_detector", "missing"))?;
        finite("scan.origin_detector", &[od])?;
        if so + od <= 0.0 {
            return Err(bad("scan.origin_detector", "the detector must lie beyond the source (source_origin + origin_detector > 0)"));
        }
        (so, od)
    };
    let views = angles
        .iter()
        .map(|deg| {
            let b = deg.to_radians();
            let (sn, cs) = b.sin_cos();
            let e = [cs, sn, 0.0];
            let uh = [-sn, cs, 0.0];
            let vh = [0.0, 0.0, 1.0];
            let det: V3 = std::array::from_fn(|a| -od * e[a] + offset[1] * uh[a] + offset[0] * vh[a]);
            let u: V3 = std::array::from_fn(|a| spacing[1] * uh[a]);
            let v: V3 = std::array::from_fn(|a| spacing[0] * vh[a]);
            match kind {
                Kind::Parallel => View { src: [-cs, -sn, 0.0], src_row: [0.0; 3], det, u, v },
                Kind::Fan => View { src: std::array::from_fn(|a| so * e[a]), src_row: v, det, u, v },
                _ => View { src: std::array::from_fn(|a| so * e[a]), src_row: [0.0; 3], det, u, v },
            }
        })
        .collect();
    let beam = if kind == Kind::Parallel { Beam::Parallel } else { Beam::Divergent };
    Ok(Geometry {
        volume,
        kind,
        beam,
        det_shape,
        views,
        angles_deg: Some(angles),
        source_origin: so,
        origin_detector: od,
        det_spacing: spacing,
        det_offset: offset,
    })
}

fn vectors(volume: VolumeGrid, kind: Kind, det_shape: [usize; 2], s: &ScanSpec) -> Result<Geometry> {
    let docs = s.views.as_ref().ok_or_else(|| bad("scan.views", "missing: vector geometries list one record per view"))?;
    if docs.is_empty() {
        return Err(bad("scan.views", "is empty"));
    }
    let parallel = kind == Kind::ParallelVec;
    let views = docs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let src = match (parallel, d.source, d.ray) {
                (true, None, Some(r)) => r,
                (false, Some(s), None) => s,
                (true, ..) => return Err(bad(&format!("scan.views[{i}]"), "parallel_vec records give `ray` (and no `source`)")),
                (false, ..) => return Err(bad(&format!("scan.views[{i}]"), "cone_vec records give `source` (and no `ray`)")),
            };
            Ok(View { src, src_row: [0.0; 3], det: d.det, u: d.u, v: d.v })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Geometry {
        volume,
        kind,
        beam: if parallel { Beam::Parallel } else { Beam::Divergent },
        det_shape,
        views,
        angles_deg: None,
        source_origin: 0.0,
        origin_detector: 0.0,
        det_spacing: [0.0, 0.0],
        det_offset: [0.0, 0.0],
    })
}

/// The circular cone-beam scan of a `shape` volume used by the demo, the reconstruction
/// benchmark and tests: source at 3 n, detector at 1.5 n from the axis (n the widest transverse
/// edge), pixels of 1.5 mm covering the magnified volume; `views` spread over `arc_deg` (below
/// 360 a limited-angle scan).
pub fn cone_scan_json(shape: [usize; 3], views: usize, arc_deg: f64) -> String {
    let n = shape[1].max(shape[2]);
    let det = [(3 * shape[0]).div_ceil(2) + 8, 2 * n];
    GeometrySpec::cone(shape, det, views, (3 * n) as f64, (3 * n / 2) as f64).det_spacing([1.5, 1.5]).arc_deg(arc_deg, 0.0).to_json()
}
