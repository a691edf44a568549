//! CT physics: geometry, the Siddon projector pair, phantoms, analytic and iterative
//! reconstruction. Conventions: docs/CT.md and the header of geometry.rs.
pub mod anatomy;
pub mod chest;
pub mod fbp;
pub mod geometry;
pub mod iterative;
pub mod noise;
pub mod phantom;
pub mod redundancy;
pub mod siddon;
pub mod units;

pub use geometry::{AstraVec, Beam, Geometry, GeometrySpec, Kind, ScanSpec, View, ViewSpec, VolumeGrid, VolumeSpec};
