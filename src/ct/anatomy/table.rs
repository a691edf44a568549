//! The patient table under the back: a carbon-fibre shell around a foam core, its top flat where
//! the back rests and its underside curved, thinner towards the edges as couch tops are.
use super::tissue::Tissue;
use rand::rngs::StdRng;
use rand::Rng;

pub(crate) struct Table {
    top: f64,
    half_width: f64,
    thickness: f64,
    shell: f64,
}

impl Table {
    /// A table whose top surface is the plane y = `top`.
    pub(crate) fn new(top: f64, rng: &mut StdRng) -> Table {
        Table { top, half_width: rng.random_range(200.0..235.0), thickness: rng.random_range(40.0..55.0), shell: 2.5 }
    }

    /// y of the top surface.
    pub(crate) fn top(&self) -> f64 {
        self.top
    }

    /// The table's material at (x, y) (it is the same at every z), None off the table.
    pub(crate) fn at(&self, x: f64, y: f64) -> Option<Tissue> {
        let u = x.abs() / self.half_width;
        if u > 1.0 || y > self.top {
            return None;
        }
        // Underside: a shallow arc, the edges 60% as thick as the middle.
        let bottom = self.top - self.thickness * (1.0 - 0.4 * u * u);
        if y < bottom {
            return None;
        }
        let inside = y < self.top - self.shell && y > bottom + self.shell && x.abs() < self.half_width - self.shell;
        Some(if inside { Tissue::TableFoam } else { Tissue::TableShell })
    }
}
