//! SVG plots of a run, drawn with plotters: `timeline.svg` (objects lost and
//! repair traffic over time), `load.svg` (distribution of node utilisation)
//! and `map.svg` (a world map of nodes, failures and disaster zones).
//!
//! This module only draws what the [`Outcome`] holds; it must not compute
//! simulation results. Maps are equirectangular (longitude → x, latitude → y),
//! cropped to the nodes and disasters with a margin.

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use strew_coordinator::cities::destination;

use crate::engine::{Fate, Outcome};

/// At most this many nodes of each kind are drawn on the map (an even, deterministic subset).
const MAP_POINTS: usize = 20_000;

/// A plot that could not be drawn or written.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw {path}: {message}")]
pub struct PlotError {
    pub path: PathBuf,
    pub message: String,
}

fn err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> PlotError + '_ {
    move |e| PlotError {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Draws every plot into `dir` and returns the files written.
pub fn draw_all(outcome: &Outcome, dir: &Path) -> Result<Vec<PathBuf>, PlotError> {
    let timeline = dir.join("timeline.svg");
    draw_timeline(outcome, &timeline)?;
    let load = dir.join("load.svg");
    draw_load(outcome, &load)?;
    let map = dir.join("map.svg");
    draw_map(outcome, &map)?;
    Ok(vec![timeline, load, map])
}

fn draw_timeline(outcome: &Outcome, path: &Path) -> Result<(), PlotError> {
    let root = SVGBackend::new(path, (900, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(err(path))?;
    let (upper, lower) = root.split_vertically(320);
    let last_day = outcome
        .timeline
        .last()
        .map(|r| r.day)
        .unwrap_or(1.0)
        .max(1e-9);

    let max_lost = outcome
        .timeline
        .iter()
        .map(|r| r.objects_lost)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let mut chart = ChartBuilder::on(&upper)
        .caption("Objects lost (cumulative)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..last_day, 0f64..max_lost * 1.1)
        .map_err(err(path))?;
    chart
        .configure_mesh()
        .x_desc("day")
        .y_desc("objects")
        .draw()
        .map_err(err(path))?;
    chart
        .draw_series(LineSeries::new(
            outcome
                .timeline
                .iter()
                .map(|r| (r.day, r.objects_lost as f64)),
            RED.stroke_width(2),
        ))
        .map_err(err(path))?;

    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let max_repair = outcome
        .timeline
        .iter()
        .map(|r| gib(r.repair_bytes))
        .fold(0.0, f64::max)
        .max(1e-3);
    let mut chart = ChartBuilder::on(&lower)
        .caption("Repair traffic (cumulative GiB)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..last_day, 0f64..max_repair * 1.1)
        .map_err(err(path))?;
    chart
        .configure_mesh()
        .x_desc("day")
        .y_desc("GiB")
        .draw()
        .map_err(err(path))?;
    chart
        .draw_series(LineSeries::new(
            outcome
                .timeline
                .iter()
                .map(|r| (r.day, gib(r.repair_bytes))),
            BLUE.stroke_width(2),
        ))
        .map_err(err(path))?;
    root.present().map_err(err(path))
}

fn draw_load(outcome: &Outcome, path: &Path) -> Result<(), PlotError> {
    const BINS: usize = 50;
    let mut counts = [0u64; BINS];
    for &u in &outcome.utilisation {
        let bin = ((u * BINS as f64) as usize).min(BINS - 1);
        counts[bin] += 1;
    }
    let max_count = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(err(path))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Load: nodes by utilisation (stored / donated) at the end",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..100f64, 0f64..max_count * 1.1)
        .map_err(err(path))?;
    chart
        .configure_mesh()
        .x_desc("utilisation %")
        .y_desc("nodes")
        .draw()
        .map_err(err(path))?;
    let width = 100.0 / BINS as f64;
    chart
        .draw_series(counts.iter().enumerate().map(|(i, &c)| {
            let x0 = i as f64 * width;
            Rectangle::new([(x0, 0.0), (x0 + width, c as f64)], BLUE.mix(0.7).filled())
        }))
        .map_err(err(path))?;
    root.present().map_err(err(path))
}

fn draw_map(outcome: &Outcome, path: &Path) -> Result<(), PlotError> {
    let (lon_range, lat_range) = map_bounds(outcome);
    let root = SVGBackend::new(path, (1200, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(err(path))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Nodes (grey), failed (red), silently lost data (orange), disaster zones (black)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(lon_range, lat_range)
        .map_err(err(path))?;
    chart
        .configure_mesh()
        .x_desc("longitude")
        .y_desc("latitude")
        .light_line_style(WHITE)
        .draw()
        .map_err(err(path))?;
    let grey = RGBColor(140, 140, 140);
    let orange = RGBColor(230, 140, 0);
    let kinds: [(&[Fate], RGBColor, u32); 3] = [
        (&[Fate::Alive], grey, 1),
        (&[Fate::Corrupted], orange, 2),
        (&[Fate::Died, Fate::Disaster], RED, 2),
    ];
    for (fates, color, size) in kinds {
        let points: Vec<(f64, f64)> = outcome
            .nodes
            .iter()
            .filter(|(_, f)| fates.contains(f))
            .map(|(p, _)| (p.lon, p.lat))
            .collect();
        let stride = points.len().div_ceil(MAP_POINTS).max(1);
        chart
            .draw_series(
                points
                    .iter()
                    .step_by(stride)
                    .map(|&xy| Circle::new(xy, size, color.filled())),
            )
            .map_err(err(path))?;
    }
    for d in &outcome.disasters {
        let ring: Vec<(f64, f64)> = (0..=72)
            .map(|i| {
                let bearing = f64::from(i) * std::f64::consts::TAU / 72.0;
                let (lat, lon) = destination(d.lat, d.lon, d.radius_km, bearing);
                (lon, lat)
            })
            .collect();
        chart
            .draw_series(std::iter::once(PathElement::new(
                ring,
                BLACK.stroke_width(2),
            )))
            .map_err(err(path))?;
    }
    root.present().map_err(err(path))
}

/// The map's extent: the nodes and disaster centres with a margin, clamped to the world.
fn map_bounds(outcome: &Outcome) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let points = outcome
        .nodes
        .iter()
        .map(|(p, _)| (p.lon, p.lat))
        .chain(outcome.disasters.iter().map(|d| (d.lon, d.lat)));
    let (mut lon0, mut lon1, mut lat0, mut lat1) = (180.0f64, -180.0f64, 90.0f64, -90.0f64);
    for (lon, lat) in points {
        lon0 = lon0.min(lon);
        lon1 = lon1.max(lon);
        lat0 = lat0.min(lat);
        lat1 = lat1.max(lat);
    }
    if lon0 > lon1 || lat0 > lat1 {
        return (-180.0..180.0, -90.0..90.0);
    }
    let margin = 0.05 * (lon1 - lon0).max(lat1 - lat0) + 1.0;
    (
        (lon0 - margin).max(-180.0)..(lon1 + margin).min(180.0),
        (lat0 - margin).max(-90.0)..(lat1 + margin).min(90.0),
    )
}
