//! The map's geometry: geodesic rings (great-circle destination points),
//! great-circle lines, cutting paths at the map's seam (the meridian opposite
//! the central one — the antimeridian on a Greenwich-centred map), and the
//! equirectangular projection of a cropped window onto pixels.
//!
//! Distances come from `strew_coordinator` (haversine, destination formula);
//! this module only does the geometry of drawing them. It must not write SVG.

use std::f64::consts::TAU;

use strew_coordinator::cities::destination;
use strew_coordinator::{GeoPoint, haversine_km};

/// Points per geodesic ring.
pub const RING_STEPS: usize = 360;
/// Smallest cropped window, in degrees of longitude and latitude.
pub const MIN_LON_SPAN: f64 = 40.0;
pub const MIN_LAT_SPAN: f64 = 25.0;

/// A polyline of (lat, lon) points in the map's longitudes (see [`wrap`]).
pub type Run = Vec<(f64, f64)>;

/// Half the Earth's circumference: no ring is drawn at or beyond it.
fn half_circumference_km() -> f64 {
    haversine_km(
        &GeoPoint { lat: 0.0, lon: 0.0 },
        &GeoPoint {
            lat: 0.0,
            lon: 180.0,
        },
    )
}

/// The closed geodesic circle of radius `km` around `center`, as (lat, lon)
/// points (first = last); `None` when it is a point (0 km or the antipode).
pub fn ring_points(center: GeoPoint, km: f64) -> Option<Run> {
    if km <= 0.0 || km >= half_circumference_km() - 1.0 {
        return None;
    }
    Some(
        (0..=RING_STEPS)
            .map(|i| {
                let bearing = TAU * (i % RING_STEPS) as f64 / RING_STEPS as f64;
                destination(center.lat, center.lon, km, bearing)
            })
            .collect(),
    )
}

/// Points along the shorter great circle from `a` to `b`, as (lat, lon), at
/// most 2 degrees of arc apart.
pub fn great_circle(a: GeoPoint, b: GeoPoint) -> Run {
    let (va, vb) = (a.unit_vector(), b.unit_vector());
    let dot = (va[0] * vb[0] + va[1] * vb[1] + va[2] * vb[2]).clamp(-1.0, 1.0);
    let angle = dot.acos();
    let sin = angle.sin();
    if sin < 1e-9 {
        // The same point, or antipodes (no unique great circle): a straight segment.
        return vec![(a.lat, a.lon), (b.lat, b.lon)];
    }
    let steps = (angle.to_degrees() / 2.0).ceil().max(2.0) as usize;
    (0..=steps)
        .map(|i| {
            let f = i as f64 / steps as f64;
            let wa = ((1.0 - f) * angle).sin() / sin;
            let wb = (f * angle).sin() / sin;
            let v = [0, 1, 2].map(|k| wa * va[k] + wb * vb[k]);
            let lat = v[2].atan2(v[0].hypot(v[1])).to_degrees();
            let lon = v[1].atan2(v[0]).to_degrees();
            (lat, lon)
        })
        .collect()
}

/// `lon` moved by whole turns into `[central - 180, central + 180)`.
pub fn wrap(lon: f64, central: f64) -> f64 {
    (lon - central + 540.0).rem_euclid(360.0) - 180.0 + central
}

/// Cuts a (lat, lon) polyline where it crosses the seam of a map centred on
/// `central` (for `central` = 0, the antimeridian): one run ends on one edge
/// of the map and the next starts on the other, so no drawn segment jumps
/// across the whole map. Longitudes of the result are in the map's range.
pub fn split_at_seam(points: &[(f64, f64)], central: f64) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut run: Run = Vec::new();
    for &(lat, lon) in points {
        let lon = wrap(lon, central);
        if let Some(&(plat, plon)) = run.last() {
            let jump = lon - plon;
            if jump.abs() > 180.0 {
                let edge = if plon > central {
                    central + 180.0
                } else {
                    central - 180.0
                };
                let unwrapped = if jump > 0.0 { lon - 360.0 } else { lon + 360.0 };
                let span = unwrapped - plon;
                let t = if span.abs() < 1e-12 {
                    0.0
                } else {
                    (edge - plon) / span
                };
                let cross = plat + t * (lat - plat);
                run.push((cross, edge));
                runs.push(std::mem::take(&mut run));
                run.push((cross, 2.0 * central - edge));
            }
        }
        run.push((lat, lon));
    }
    if run.len() > 1 {
        runs.push(run);
    }
    runs
}

/// An equirectangular projection of a lon/lat window onto a pixel box, with
/// a standard parallel at the window's middle latitude. Longitudes are the
/// map's: within `central ± 180`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View {
    pub central: f64,
    pub lon0: f64,
    pub lon1: f64,
    pub lat0: f64,
    pub lat1: f64,
    /// Pixels per degree of longitude and of latitude.
    pub kx: f64,
    pub ky: f64,
    /// Top-left corner of the map area and its size in pixels.
    pub ox: f64,
    pub oy: f64,
    pub width: f64,
    pub height: f64,
}

impl View {
    /// The window holding `points` (lat, map lon) with a margin, at least
    /// [`MIN_LON_SPAN`] × [`MIN_LAT_SPAN`] degrees, widened to the aspect of
    /// the `box_w` × `box_h` pixel box placed at (`left`, `top`); all
    /// longitudes when `full_lon`.
    pub fn fit(
        points: &[(f64, f64)],
        full_lon: bool,
        central: f64,
        (left, top, box_w, box_h): (f64, f64, f64, f64),
    ) -> View {
        let (mut lat_lo, mut lat_hi) = (90.0f64, -90.0f64);
        let (mut lon_lo, mut lon_hi) = (central + 180.0, central - 180.0);
        for &(lat, lon) in points {
            lat_lo = lat_lo.min(lat);
            lat_hi = lat_hi.max(lat);
            lon_lo = lon_lo.min(lon);
            lon_hi = lon_hi.max(lon);
        }
        if lat_lo > lat_hi {
            (lat_lo, lat_hi, lon_lo, lon_hi) = (0.0, 0.0, central, central);
        }
        let (west, east) = (central - 180.0, central + 180.0);
        let lat_margin = (0.12 * (lat_hi - lat_lo)).max(3.0);
        let lon_margin = (0.12 * (lon_hi - lon_lo)).max(4.0);
        let (mut lat0, mut lat1) = widen(lat_lo - lat_margin, lat_hi + lat_margin, MIN_LAT_SPAN);
        let (mut lon0, mut lon1) = if full_lon {
            (west, east)
        } else {
            widen(lon_lo - lon_margin, lon_hi + lon_margin, MIN_LON_SPAN)
        };
        (lat0, lat1) = clamp_window(lat0, lat1, -90.0, 90.0);
        (lon0, lon1) = clamp_window(lon0, lon1, west, east);

        let cos = ((lat0 + lat1) / 2.0).to_radians().cos().max(0.5);
        let aspect = box_w / box_h;
        if (lon1 - lon0) * cos / (lat1 - lat0) < aspect {
            (lon0, lon1) = widen(lon0, lon1, (lat1 - lat0) * aspect / cos);
            (lon0, lon1) = clamp_window(lon0, lon1, west, east);
        } else {
            (lat0, lat1) = widen(lat0, lat1, (lon1 - lon0) * cos / aspect);
            (lat0, lat1) = clamp_window(lat0, lat1, -90.0, 90.0);
        }
        let scale = (box_w / ((lon1 - lon0) * cos)).min(box_h / (lat1 - lat0));
        let (kx, ky) = (scale * cos, scale);
        let (width, height) = ((lon1 - lon0) * kx, (lat1 - lat0) * ky);
        View {
            central,
            lon0,
            lon1,
            lat0,
            lat1,
            kx,
            ky,
            ox: left + (box_w - width) / 2.0,
            oy: top,
            width,
            height,
        }
    }

    /// Pixel x of a map longitude (already wrapped, e.g. from [`split_at_seam`]).
    pub fn x(&self, map_lon: f64) -> f64 {
        self.ox + (map_lon - self.lon0) * self.kx
    }

    /// Pixel y of a latitude.
    pub fn y(&self, lat: f64) -> f64 {
        self.oy + (self.lat1 - lat) * self.ky
    }

    /// Pixel position of any (lat, lon) in degrees.
    pub fn point(&self, lat: f64, lon: f64) -> (f64, f64) {
        (self.x(wrap(lon, self.central)), self.y(lat))
    }

    /// Whether (lat, lon) in degrees lies in the window.
    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        let lon = wrap(lon, self.central);
        (self.lat0..=self.lat1).contains(&lat) && (self.lon0..=self.lon1).contains(&lon)
    }
}

/// Widens `lo..hi` around its middle to at least `span`.
fn widen(lo: f64, hi: f64, span: f64) -> (f64, f64) {
    if hi - lo >= span {
        return (lo, hi);
    }
    let mid = (lo + hi) / 2.0;
    (mid - span / 2.0, mid + span / 2.0)
}

/// Shifts `lo..hi` inside `min..max` (all of it if the window is wider).
fn clamp_window(lo: f64, hi: f64, min: f64, max: f64) -> (f64, f64) {
    if hi - lo >= max - min {
        (min, max)
    } else if lo < min {
        (min, min + (hi - lo))
    } else if hi > max {
        (max - (hi - lo), max)
    } else {
        (lo, hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOX: (f64, f64, f64, f64) = (0.0, 0.0, 1000.0, 620.0);

    fn point(lat: f64, lon: f64) -> GeoPoint {
        GeoPoint::new(lat, lon).expect("valid point")
    }

    #[test]
    fn ring_points_lie_at_the_requested_distance() {
        let centers = [
            (0.0, 0.0),
            (48.8566, 2.3522),
            (-33.87, 151.21),
            (0.0, 179.0),
            (85.0, -40.0),
            (-89.0, 10.0),
        ];
        for (lat, lon) in centers {
            let center = point(lat, lon);
            for km in [50.0, 200.0, 2000.0, 9000.0] {
                let ring = ring_points(center, km).expect("a ring");
                assert_eq!(ring.len(), RING_STEPS + 1);
                assert_eq!(ring.first(), ring.last(), "ring is closed");
                for &(plat, plon) in &ring {
                    let d = haversine_km(&center, &point(plat, plon));
                    assert!(
                        (d - km).abs() < 0.5,
                        "{km} km ring around ({lat}, {lon}): point at {d} km"
                    );
                }
            }
        }
        assert!(ring_points(point(10.0, 10.0), 0.0).is_none());
        assert!(ring_points(point(10.0, 10.0), 25_000.0).is_none());
    }

    #[test]
    fn a_ring_across_the_antimeridian_is_split_on_both_edges() {
        let ring = ring_points(point(10.0, 179.0), 500.0).expect("a ring");
        let runs = split_at_seam(&ring, 0.0);
        assert_eq!(
            runs.len(),
            3,
            "starts west of the line, crosses, comes back"
        );
        let mut on_edges = Vec::new();
        for run in &runs {
            for pair in run.windows(2) {
                assert!((pair[1].1 - pair[0].1).abs() < 90.0, "jump {pair:?}");
            }
            on_edges.extend(run.iter().filter(|p| p.1.abs() == 180.0).copied());
        }
        assert_eq!(on_edges.len(), 4, "each crossing ends a run and starts one");
        // The two points of one crossing share their latitude, on opposite edges.
        assert_eq!(on_edges[0].0, on_edges[1].0);
        assert_eq!(on_edges[0].1, -on_edges[1].1);
        // The crossing latitude lies on the ring: about 500 km from the centre.
        let d = haversine_km(&point(10.0, 179.0), &point(on_edges[0].0, 180.0));
        assert!((d - 500.0).abs() < 5.0, "{d}");
        // Centred on 180°, the same ring is one piece.
        assert_eq!(split_at_seam(&ring, 180.0).len(), 1);
    }

    #[test]
    fn a_ring_around_a_pole_is_cut_once() {
        let ring = ring_points(point(80.0, 20.0), 2000.0).expect("a ring");
        let runs = split_at_seam(&ring, 0.0);
        assert_eq!(runs.len(), 2);
        for run in &runs {
            for pair in run.windows(2) {
                assert!((pair[1].1 - pair[0].1).abs() < 90.0, "jump {pair:?}");
            }
        }
    }

    #[test]
    fn wrap_keeps_longitudes_within_the_map() {
        assert_eq!(wrap(179.0, 0.0), 179.0);
        assert_eq!(wrap(-179.0, 180.0), 181.0);
        assert_eq!(wrap(10.0, 180.0), 10.0);
        assert_eq!(wrap(-10.0, 180.0), 350.0);
        assert_eq!(wrap(180.0, 0.0), -180.0);
    }

    #[test]
    fn great_circle_lines_end_at_source_and_target_and_stay_on_the_circle() {
        let (a, b) = (point(48.8566, 2.3522), point(-33.87, 151.21));
        let line = great_circle(a, b);
        let (first, last) = (line[0], line[line.len() - 1]);
        assert!((first.0 - a.lat).abs() < 1e-6 && (first.1 - a.lon).abs() < 1e-6);
        assert!((last.0 - b.lat).abs() < 1e-6 && (last.1 - b.lon).abs() < 1e-6);
        let total = haversine_km(&a, &b);
        for &(lat, lon) in &line {
            let p = point(lat, lon);
            let sum = haversine_km(&a, &p) + haversine_km(&p, &b);
            assert!((sum - total).abs() < 0.5, "{sum} vs {total}");
        }
    }

    #[test]
    fn the_window_is_cropped_but_holds_everything() {
        let ring = ring_points(point(48.8566, 2.3522), 2000.0).expect("a ring");
        let view = View::fit(&ring, false, 0.0, BOX);
        assert!(view.lon1 - view.lon0 >= MIN_LON_SPAN);
        assert!(
            view.lon1 - view.lon0 < 180.0,
            "Europe is not the whole world"
        );
        for &(lat, lon) in &ring {
            assert!(view.contains(lat, lon), "({lat}, {lon}) outside {view:?}");
        }
        assert!(view.width <= 1000.0 + 1e-6 && view.height <= 620.0 + 1e-6);
        let lone = View::fit(&[(0.0, 0.0)], false, 0.0, BOX);
        assert!(lone.lon1 - lone.lon0 >= MIN_LON_SPAN - 1e-9);
        assert!(lone.lat1 - lone.lat0 >= MIN_LAT_SPAN - 1e-9);
        let world = View::fit(&[(0.0, 0.0)], true, 0.0, BOX);
        assert_eq!((world.lon0, world.lon1), (-180.0, 180.0));
    }

    #[test]
    fn a_window_centred_on_the_pacific_maps_both_sides_of_the_line() {
        let ring = ring_points(point(-17.7, 179.0), 600.0).expect("a ring");
        let runs = split_at_seam(&ring, 180.0);
        assert_eq!(runs.len(), 1);
        let view = View::fit(&runs[0], false, 180.0, BOX);
        assert!(view.lon1 - view.lon0 < 90.0, "cropped: {view:?}");
        assert!(view.contains(-18.0, -178.5) && view.contains(-17.0, 178.0));
        let (west, _) = view.point(-17.0, 178.0);
        let (east, _) = view.point(-17.0, -178.0);
        assert!(east > west, "east of the line is drawn to the right");
        assert!(east - west < view.width / 4.0);
    }
}
