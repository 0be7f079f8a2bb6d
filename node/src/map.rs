//! The world map of where a backup's packets are: an SVG picture for
//! `strew status --map FILE.svg` and `strew demo`.
//!
//! Owns the picture: the 15-degree graticule, background cities as grey dots
//! (34k of them draw the continents), the backup-distance ring(s), a
//! great-circle line from the source to every target, targets coloured up or
//! down with their packet counts, the highlighted source, the legend (bounds,
//! nearest and farthest target) and the XML escaping of every label. The
//! geometry (rings, seam cutting, projection) is in [`geometry`]. Pure: the
//! caller passes the cities (see [`cities_from`]) and writes the string where
//! it wants. It must not decide placement or ask the grid anything.

pub mod geometry;

use std::fmt::Write as _;

use strew_coordinator::cities::{City, CityTable};
use strew_coordinator::{GeoPoint, haversine_km};

use geometry::{Run, View, great_circle, ring_points, split_at_seam, wrap};

/// The map area's pixel box (the legend goes below it).
const MAP_W: f64 = 1000.0;
const MAP_H: f64 = 620.0;
/// Margins: left (latitude labels), right and bottom, top (title).
const PAD_LEFT: f64 = 44.0;
const PAD: f64 = 24.0;
const TITLE_H: f64 = 34.0;
/// Height of one legend line.
const LINE_H: f64 = 18.0;
/// Graticule spacing in degrees.
const GRATICULE_DEG: f64 = 15.0;
/// Bytes of city dots at most; beyond it the smallest cities are left out,
/// which keeps the whole file under ~3 MB.
const CITY_BYTES_BUDGET: usize = 2_500_000;
/// Longest label drawn, in characters.
const MAX_LABEL_CHARS: usize = 48;
/// Targets listed by name in the legend (all of them are labelled on the map).
const LEGEND_TARGETS: usize = 12;

const COLOR_UP: &str = "#1a9850";
const COLOR_DOWN: &str = "#d73027";
const COLOR_SOURCE: &str = "#f18d00";
const COLOR_RING: &str = "#3366cc";

/// Bad map input: all of it comes from the grid or the user.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MapError {
    #[error(
        "{what} has an invalid location ({lat}, {lon}): latitude must lie in -90..=90 and longitude in -180..=180"
    )]
    BadLocation { what: String, lat: f64, lon: f64 },
    #[error("{what} = {value} km is not a distance (it must be finite and not negative)")]
    BadDistance { what: &'static str, value: f64 },
    #[error("the backup distance minimum ({min_km} km) is larger than its maximum ({max_km} km)")]
    InvertedBounds { min_km: f64, max_km: f64 },
}

/// The node whose packets are shown.
#[derive(Debug, Clone, PartialEq)]
pub struct MapSource {
    pub lat: f64,
    pub lon: f64,
    pub label: String,
}

/// A target holding some of the source's packets.
#[derive(Debug, Clone, PartialEq)]
pub struct MapTarget {
    pub lat: f64,
    pub lon: f64,
    pub label: String,
    /// Packets of the source this target holds.
    pub packets: u64,
    /// Whether the target is online (in the grid view and not expired).
    pub up: bool,
}

/// A background city (drawn as a grey dot sized by population).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MapCity {
    pub lat: f64,
    pub lon: f64,
    pub population: u64,
}

impl From<&City> for MapCity {
    fn from(city: &City) -> Self {
        MapCity {
            lat: city.lat,
            lon: city.lon,
            population: city.population,
        }
    }
}

/// The background cities of a city table (usually `CityTable::embedded()`).
pub fn cities_from(table: &CityTable) -> Vec<MapCity> {
    table.cities().iter().map(MapCity::from).collect()
}

/// Everything the map shows.
#[derive(Debug, Clone, PartialEq)]
pub struct MapInput {
    pub title: String,
    pub source: MapSource,
    pub targets: Vec<MapTarget>,
    /// Backup distance bounds (source → each target), km.
    pub min_km: Option<f64>,
    pub max_km: Option<f64>,
    /// Packet spread minimum (between any two targets), km; only stated in the legend.
    pub spread_min_km: Option<f64>,
    pub cities: Vec<MapCity>,
}

/// Renders the map as a standalone SVG document.
pub fn render_svg(input: &MapInput) -> Result<String, MapError> {
    let source = check_point("the source", input.source.lat, input.source.lon)?;
    let targets = input
        .targets
        .iter()
        .map(|t| check_point(&format!("target {:?}", t.label), t.lat, t.lon))
        .collect::<Result<Vec<_>, _>>()?;
    let min_km = check_distance("the backup distance minimum", input.min_km)?;
    let max_km = check_distance("the backup distance maximum", input.max_km)?;
    check_distance("the packet spread minimum", input.spread_min_km)?;
    if let (Some(min_km), Some(max_km)) = (min_km, max_km)
        && min_km > max_km
    {
        return Err(MapError::InvertedBounds { min_km, max_km });
    }

    // Greenwich-centred unless something crosses the antimeridian; then
    // centred on the source's meridian, so a Pacific grid is drawn in one piece.
    let mut shapes = Shapes::new(source, &targets, min_km, max_km, 0.0);
    if shapes.is_cut() {
        let central = (source.lon / GRATICULE_DEG).round() * GRATICULE_DEG;
        shapes = Shapes::new(source, &targets, min_km, max_km, central);
    }
    let view = View::fit(
        &shapes.extent(source, &targets),
        shapes.is_cut(),
        shapes.central,
        (PAD_LEFT, TITLE_H, MAP_W, MAP_H),
    );

    let legend = Legend::new(input, source, &targets, min_km, max_km);
    let width = PAD_LEFT + MAP_W + PAD;
    let legend_top = view.oy + view.height + PAD;
    let height = legend_top + legend.height() + PAD / 2.0;

    let mut svg = String::with_capacity(1 << 20);
    let _ = write!(
        svg,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n\
         <title>{title}</title>\n\
         <rect width=\"{width:.0}\" height=\"{height:.0}\" fill=\"#ffffff\"/>\n\
         <text x=\"{PAD_LEFT}\" y=\"{ty:.1}\" font-size=\"18\" font-weight=\"bold\" fill=\"#222\">{title}</text>\n\
         <defs><clipPath id=\"map-area\"><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\"/></clipPath></defs>\n\
         <rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" fill=\"#f3f7fa\" stroke=\"#888\" stroke-width=\"1\"/>\n\
         <g clip-path=\"url(#map-area)\">\n",
        title = escape_xml(&input.title),
        ty = TITLE_H - 10.0,
        x = view.ox,
        y = view.oy,
        w = view.width,
        h = view.height,
    );
    graticule(&mut svg, &view);
    svg.push_str(&city_layer(&view, &input.cities, CITY_BYTES_BUDGET));
    if max_km != Some(0.0) {
        allowed_region(
            &mut svg,
            &view,
            shapes.min_ring.as_deref(),
            shapes.max_ring.as_deref(),
        );
    }
    for runs in shapes.min_ring.iter().chain(&shapes.max_ring) {
        polyline(
            &mut svg,
            &view,
            runs,
            &format!(
                "fill=\"none\" stroke=\"{COLOR_RING}\" stroke-width=\"1.6\" stroke-dasharray=\"6 4\""
            ),
        );
    }
    for (runs, target) in shapes.lines.iter().zip(&input.targets) {
        let color = if target.up { COLOR_UP } else { COLOR_DOWN };
        polyline(
            &mut svg,
            &view,
            runs,
            &format!(
                "fill=\"none\" stroke=\"{color}\" stroke-width=\"1.3\" stroke-opacity=\"0.75\""
            ),
        );
    }
    let mut labels = Labels::new(&view);
    let (sx, sy) = view.point(source.lat, source.lon);
    labels.block(sx, sy, 12.0);
    let target_xy: Vec<(f64, f64)> = targets.iter().map(|t| view.point(t.lat, t.lon)).collect();
    for (target, &(x, y)) in input.targets.iter().zip(&target_xy) {
        target_marker(&mut svg, target, x, y);
        labels.block(x, y, 7.0);
    }
    source_marker(&mut svg, sx, sy);
    labels.place(
        &mut svg,
        (sx, sy, 12.0),
        &format!("{} (source)", escape_label(&input.source.label)),
        label_chars(&input.source.label) + 9,
        "font-size=\"12\" font-weight=\"bold\"",
    );
    for (target, &(x, y)) in input.targets.iter().zip(&target_xy) {
        let state = if target.up { "" } else { " (down)" };
        let text = format!(
            "{} · {} packets{state}",
            escape_label(&target.label),
            target.packets
        );
        let chars =
            label_chars(&target.label) + 11 + target.packets.to_string().len() + state.len();
        labels.place(&mut svg, (x, y, 7.0), &text, chars, "font-size=\"11\"");
    }
    svg.push_str("</g>\n");
    graticule_labels(&mut svg, &view);
    legend.draw(&mut svg, legend_top);
    svg.push_str("</svg>\n");
    Ok(svg)
}

// ------------------------------------------------------------ input checks

fn check_point(what: &str, lat: f64, lon: f64) -> Result<GeoPoint, MapError> {
    GeoPoint::new(lat, lon).map_err(|_| MapError::BadLocation {
        what: what.to_string(),
        lat,
        lon,
    })
}

fn check_distance(what: &'static str, km: Option<f64>) -> Result<Option<f64>, MapError> {
    match km {
        Some(value) if !value.is_finite() || value < 0.0 => {
            Err(MapError::BadDistance { what, value })
        }
        other => Ok(other),
    }
}

// ------------------------------------------------------------ shapes

/// The rings and lines of one map, cut at the seam of a map centred on `central`.
struct Shapes {
    central: f64,
    min_ring: Option<Vec<Run>>,
    max_ring: Option<Vec<Run>>,
    lines: Vec<Vec<Run>>,
}

impl Shapes {
    fn new(
        source: GeoPoint,
        targets: &[GeoPoint],
        min_km: Option<f64>,
        max_km: Option<f64>,
        central: f64,
    ) -> Shapes {
        let ring = |km: Option<f64>| {
            km.and_then(|km| ring_points(source, km))
                .map(|points| split_at_seam(&points, central))
        };
        Shapes {
            central,
            min_ring: ring(min_km),
            max_ring: ring(max_km),
            lines: targets
                .iter()
                .map(|t| split_at_seam(&great_circle(source, *t), central))
                .collect(),
        }
    }

    /// Whether anything had to be cut at the seam.
    fn is_cut(&self) -> bool {
        self.min_ring
            .iter()
            .chain(&self.max_ring)
            .chain(&self.lines)
            .any(|runs| runs.len() > 1)
    }

    /// Every point the window must hold, in map longitudes.
    fn extent(&self, source: GeoPoint, targets: &[GeoPoint]) -> Vec<(f64, f64)> {
        let mut points = vec![(source.lat, wrap(source.lon, self.central))];
        points.extend(targets.iter().map(|t| (t.lat, wrap(t.lon, self.central))));
        for runs in self.min_ring.iter().chain(&self.max_ring) {
            points.extend(runs.iter().flatten().copied());
        }
        points
    }
}

// ------------------------------------------------------------ drawing

/// Appends one `<path>` drawing `runs`.
fn polyline(svg: &mut String, view: &View, runs: &[Run], style: &str) {
    let mut d = String::new();
    for run in runs {
        path_data(&mut d, view, run);
    }
    if !d.is_empty() {
        let _ = writeln!(svg, "<path d=\"{d}\" {style}/>");
    }
}

/// Appends `M x y L x y …` for one run.
fn path_data(d: &mut String, view: &View, run: &[(f64, f64)]) {
    for (i, &(lat, lon)) in run.iter().enumerate() {
        let cmd = if i == 0 { 'M' } else { 'L' };
        let _ = write!(d, "{cmd}{:.1} {:.1}", view.x(lon), view.y(lat));
    }
}

fn graticule(svg: &mut String, view: &View) {
    let mut d = String::new();
    for lon in graticule_steps(view.lon0, view.lon1) {
        let _ = write!(
            d,
            "M{:.1} {:.1}V{:.1}",
            view.x(lon),
            view.oy,
            view.oy + view.height
        );
    }
    for lat in graticule_steps(view.lat0, view.lat1) {
        let _ = write!(
            d,
            "M{:.1} {:.1}H{:.1}",
            view.ox,
            view.y(lat),
            view.ox + view.width
        );
    }
    let _ = writeln!(
        svg,
        "<path d=\"{d}\" fill=\"none\" stroke=\"#d5dde3\" stroke-width=\"0.8\"/>"
    );
}

/// Multiples of [`GRATICULE_DEG`] inside `lo..=hi`.
fn graticule_steps(lo: f64, hi: f64) -> impl Iterator<Item = f64> {
    let first = (lo / GRATICULE_DEG).ceil() as i32;
    let last = (hi / GRATICULE_DEG).floor() as i32;
    (first..=last).map(|i| f64::from(i) * GRATICULE_DEG)
}

fn graticule_labels(svg: &mut String, view: &View) {
    let style = "font-size=\"10\" fill=\"#777\"";
    for lon in graticule_steps(view.lon0, view.lon1) {
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" {style}>{}</text>",
            view.x(lon),
            view.oy + view.height + 12.0,
            degrees(wrap(lon, 0.0), 'E', 'W')
        );
    }
    for lat in graticule_steps(view.lat0, view.lat1) {
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" {style}>{}</text>",
            view.ox - 4.0,
            view.y(lat) + 3.5,
            degrees(lat, 'N', 'S')
        );
    }
}

fn degrees(value: f64, positive: char, negative: char) -> String {
    if value == 0.0 || value.abs() == 180.0 {
        format!("{:.0}°", value.abs())
    } else if value > 0.0 {
        format!("{value:.0}°{positive}")
    } else {
        format!("{:.0}°{negative}", -value)
    }
}

/// Dot classes: population floor and dot diameter in px (at 4 px per degree).
const CITY_CLASSES: [(u64, f64); 4] = [(1_000_000, 3.4), (250_000, 2.5), (50_000, 1.8), (0, 1.3)];

/// The cities inside the view as grey dots, one `<path>` per size class;
/// cities are taken biggest first and the rest left out once `budget` bytes
/// of dots are used.
fn city_layer(view: &View, cities: &[MapCity], budget: usize) -> String {
    let mut inside: Vec<&MapCity> = cities
        .iter()
        .filter(|c| c.lat.is_finite() && c.lon.is_finite() && view.contains(c.lat, c.lon))
        .collect();
    inside.sort_by_key(|c| std::cmp::Reverse(c.population));
    let mut paths: [String; CITY_CLASSES.len()] = Default::default();
    let mut used = 0;
    for city in inside {
        let class = CITY_CLASSES
            .iter()
            .position(|(floor, _)| city.population >= *floor)
            .unwrap_or(CITY_CLASSES.len() - 1);
        let (x, y) = view.point(city.lat, city.lon);
        let dot = format!("M{x:.1} {y:.1}h0");
        if used + dot.len() > budget {
            break;
        }
        used += dot.len();
        paths[class].push_str(&dot);
    }
    // Dots grow a little when zoomed in, so a region still reads as land.
    let zoom = (view.ky / 4.0).sqrt().clamp(0.75, 1.5);
    let mut out = String::with_capacity(used + 512);
    // Smallest first, so big cities are drawn on top.
    for (path, (_, size)) in paths.iter().zip(CITY_CLASSES).rev() {
        if !path.is_empty() {
            let _ = writeln!(
                out,
                "<path d=\"{path}\" fill=\"none\" stroke=\"#8c959e\" stroke-opacity=\"0.8\" \
                 stroke-width=\"{:.2}\" stroke-linecap=\"round\"/>",
                size * zoom
            );
        }
    }
    out
}

/// Shades where targets may be: inside the maximum ring (anywhere when there
/// is none) and outside the minimum ring, when both are whole closed curves
/// on the map (a ring cut at the seam is only stroked).
fn allowed_region(
    svg: &mut String,
    view: &View,
    min_ring: Option<&[Run]>,
    max_ring: Option<&[Run]>,
) {
    if min_ring.is_none() && max_ring.is_none() {
        return;
    }
    let whole = |ring: Option<&[Run]>| ring.is_none_or(|runs| runs.len() == 1);
    if !whole(min_ring) || !whole(max_ring) {
        return;
    }
    let mut d = String::new();
    if max_ring.is_none() {
        let _ = write!(
            d,
            "M{:.1} {:.1}H{:.1}V{:.1}H{:.1}Z",
            view.ox,
            view.oy,
            view.ox + view.width,
            view.oy + view.height,
            view.ox
        );
    }
    for runs in [min_ring, max_ring].into_iter().flatten() {
        path_data(&mut d, view, &runs[0]);
        d.push('Z');
    }
    let _ = writeln!(
        svg,
        "<path d=\"{d}\" fill=\"{COLOR_RING}\" fill-opacity=\"0.07\" fill-rule=\"evenodd\" stroke=\"none\"/>"
    );
}

fn target_marker(svg: &mut String, target: &MapTarget, x: f64, y: f64) {
    let color = if target.up { COLOR_UP } else { COLOR_DOWN };
    let _ = writeln!(
        svg,
        "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"6\" fill=\"{color}\" stroke=\"#fff\" stroke-width=\"1.5\"/>"
    );
    if !target.up {
        let _ = writeln!(
            svg,
            "<path d=\"M{:.1} {:.1}l6 6m0 -6l-6 6\" stroke=\"#fff\" stroke-width=\"1.6\"/>",
            x - 3.0,
            y - 3.0
        );
    }
}

fn source_marker(svg: &mut String, x: f64, y: f64) {
    let _ = writeln!(
        svg,
        "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"12\" fill=\"{COLOR_SOURCE}\" fill-opacity=\"0.25\"/>\n\
         <path d=\"{}\" fill=\"{COLOR_SOURCE}\" stroke=\"#fff\" stroke-width=\"1.2\"/>",
        star(x, y, 9.0)
    );
}

/// Path data of a five-pointed star centred on (x, y).
fn star(x: f64, y: f64, r: f64) -> String {
    let mut d = String::new();
    for i in 0..10 {
        let radius = if i % 2 == 0 { r } else { r * 0.45 };
        let angle = std::f64::consts::PI * f64::from(i) / 5.0 - std::f64::consts::FRAC_PI_2;
        let cmd = if i == 0 { 'M' } else { 'L' };
        let _ = write!(
            d,
            "{cmd}{:.1} {:.1}",
            x + radius * angle.cos(),
            y + radius * angle.sin()
        );
    }
    d.push('Z');
    d
}

/// Places map labels next to their markers, trying eight positions around
/// each and taking the first that overlaps no marker or earlier label and
/// stays on the map (the first position when none does).
struct Labels {
    taken: Vec<[f64; 4]>,
    area: [f64; 4],
}

impl Labels {
    fn new(view: &View) -> Labels {
        Labels {
            taken: Vec::new(),
            area: [
                view.ox,
                view.oy,
                view.ox + view.width,
                view.oy + view.height,
            ],
        }
    }

    /// Keeps labels off a marker of radius `r` at (x, y).
    fn block(&mut self, x: f64, y: f64, r: f64) {
        self.taken.push([x - r, y - r, x + r, y + r]);
    }

    /// Draws `text` (escaped; about `chars` characters) next to the marker (x, y, r).
    fn place(
        &mut self,
        svg: &mut String,
        (x, y, r): (f64, f64, f64),
        text: &str,
        chars: usize,
        style: &str,
    ) {
        let size = if style.contains("12") { 12.0 } else { 11.0 };
        let (w, h) = (chars as f64 * size * 0.6, size * 1.2);
        let gap = r + 3.0;
        let candidates = [
            (x + gap, y - h / 2.0),
            (x - gap - w, y - h / 2.0),
            (x - w / 2.0, y - gap - h),
            (x - w / 2.0, y + gap),
            (x + gap * 0.7, y - gap * 0.7 - h),
            (x + gap * 0.7, y + gap * 0.7),
            (x - gap * 0.7 - w, y - gap * 0.7 - h),
            (x - gap * 0.7 - w, y + gap * 0.7),
        ];
        let boxes = candidates.map(|(left, top)| [left, top, left + w, top + h]);
        let free = |b: &[f64; 4]| {
            b[0] >= self.area[0]
                && b[1] >= self.area[1]
                && b[2] <= self.area[2]
                && b[3] <= self.area[3]
                && !self.taken.iter().any(|t| overlaps(b, t))
        };
        let chosen = boxes.iter().find(|b| free(b)).copied().unwrap_or(boxes[0]);
        self.taken.push(chosen);
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" {style} fill=\"#222\" stroke=\"#fff\" stroke-width=\"3\" \
             stroke-opacity=\"0.85\" paint-order=\"stroke\">{text}</text>",
            chosen[0],
            chosen[1] + size
        );
    }
}

fn overlaps(a: &[f64; 4], b: &[f64; 4]) -> bool {
    a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3]
}

// ------------------------------------------------------------ legend

/// What the legend states: a key on the left, the targets on the right.
struct Legend {
    key: Vec<(Swatch, String)>,
    targets: Vec<(bool, String)>,
}

#[derive(Clone, Copy)]
enum Swatch {
    Source,
    Up,
    Down,
    Ring,
    Text,
}

impl Legend {
    fn new(
        input: &MapInput,
        source: GeoPoint,
        targets: &[GeoPoint],
        min_km: Option<f64>,
        max_km: Option<f64>,
    ) -> Legend {
        let distances: Vec<f64> = targets.iter().map(|t| haversine_km(&source, t)).collect();
        let up = input.targets.iter().filter(|t| t.up).count();
        let packets: u64 = input.targets.iter().map(|t| t.packets).sum();
        let down_packets: u64 = input
            .targets
            .iter()
            .filter(|t| !t.up)
            .map(|t| t.packets)
            .sum();
        let mut key = vec![
            (
                Swatch::Source,
                format!(
                    "source {} at {:.2}, {:.2}",
                    escape_label(&input.source.label),
                    source.lat,
                    source.lon
                ),
            ),
            (Swatch::Up, format!("target up ({up})")),
            (
                Swatch::Down,
                format!("target down ({})", input.targets.len() - up),
            ),
            (
                Swatch::Ring,
                format!("backup distance {}", bounds_text(min_km, max_km)),
            ),
        ];
        if let Some(spread) = input.spread_min_km {
            key.push((
                Swatch::Text,
                format!(
                    "packet spread at least {} between any two targets",
                    km_text(spread)
                ),
            ));
        }
        let nearest = distances.iter().copied().fold(f64::INFINITY, f64::min);
        let farthest = distances.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if distances.is_empty() {
            key.push((Swatch::Text, "no targets".to_string()));
        } else {
            key.push((
                Swatch::Text,
                format!(
                    "nearest target {}, farthest {}",
                    km_text(nearest),
                    km_text(farthest)
                ),
            ));
            key.push((
                Swatch::Text,
                format!(
                    "{} targets hold {packets} packets ({down_packets} on targets that are down)",
                    input.targets.len()
                ),
            ));
        }

        let mut order: Vec<usize> = (0..input.targets.len()).collect();
        order.sort_by(|&a, &b| distances[a].total_cmp(&distances[b]));
        let mut listed: Vec<(bool, String)> = order
            .iter()
            .take(LEGEND_TARGETS)
            .map(|&i| {
                let t = &input.targets[i];
                (
                    t.up,
                    format!(
                        "{} — {} — {} packets{}",
                        escape_label(&t.label),
                        km_text(distances[i]),
                        t.packets,
                        if t.up { "" } else { " — down" }
                    ),
                )
            })
            .collect();
        if order.len() > LEGEND_TARGETS {
            listed.push((true, format!("… and {} more", order.len() - LEGEND_TARGETS)));
        }
        Legend {
            key,
            targets: listed,
        }
    }

    fn height(&self) -> f64 {
        self.key.len().max(self.targets.len()) as f64 * LINE_H
    }

    fn draw(&self, svg: &mut String, top: f64) {
        let text = "font-size=\"12\" fill=\"#222\"";
        for (i, (swatch, line)) in self.key.iter().enumerate() {
            let y = top + (i as f64 + 0.7) * LINE_H;
            let (x, cy) = (PAD_LEFT + 8.0, y - 4.0);
            let _ = match swatch {
                Swatch::Source => writeln!(
                    svg,
                    "<path d=\"{}\" fill=\"{COLOR_SOURCE}\"/>",
                    star(x, cy, 7.0)
                ),
                Swatch::Up => writeln!(
                    svg,
                    "<circle cx=\"{x:.1}\" cy=\"{cy:.1}\" r=\"5\" fill=\"{COLOR_UP}\"/>"
                ),
                Swatch::Down => writeln!(
                    svg,
                    "<circle cx=\"{x:.1}\" cy=\"{cy:.1}\" r=\"5\" fill=\"{COLOR_DOWN}\"/>"
                ),
                Swatch::Ring => writeln!(
                    svg,
                    "<path d=\"M{:.1} {cy:.1}h16\" stroke=\"{COLOR_RING}\" stroke-width=\"1.6\" stroke-dasharray=\"6 4\"/>",
                    x - 8.0
                ),
                Swatch::Text => Ok(()),
            };
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{y:.1}\" {text}>{line}</text>",
                PAD_LEFT + 22.0
            );
        }
        let column = PAD_LEFT + MAP_W / 2.0;
        for (i, (up, line)) in self.targets.iter().enumerate() {
            let y = top + (i as f64 + 0.7) * LINE_H;
            let color = if *up { COLOR_UP } else { COLOR_DOWN };
            let _ = writeln!(
                svg,
                "<circle cx=\"{column:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{color}\"/>\n\
                 <text x=\"{:.1}\" y=\"{y:.1}\" {text}>{line}</text>",
                y - 4.0,
                column + 10.0
            );
        }
    }
}

/// `200 km – 2000 km`, `at least 200 km`, `at most 2000 km` or `unbounded`.
fn bounds_text(min_km: Option<f64>, max_km: Option<f64>) -> String {
    match (min_km, max_km) {
        (Some(lo), Some(hi)) => format!("{} – {}", km_text(lo), km_text(hi)),
        (Some(lo), None) => format!("at least {}", km_text(lo)),
        (None, Some(hi)) => format!("at most {}", km_text(hi)),
        (None, None) => "unbounded".to_string(),
    }
}

/// A distance for people: whole km from 10 km up, one decimal below.
fn km_text(km: f64) -> String {
    if km >= 10.0 {
        format!("{km:.0} km")
    } else {
        format!("{km:.1} km")
    }
}

// ------------------------------------------------------------ text

/// Escapes text for XML content and attribute values; characters XML 1.0 does
/// not allow (most control characters) become U+FFFD.
pub fn escape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c < ' ' || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// The label as drawn: one line, at most [`MAX_LABEL_CHARS`] characters (then `…`).
fn short_label(label: &str) -> String {
    let one_line: String = label
        .trim()
        .chars()
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .collect();
    let mut short: String = one_line.chars().take(MAX_LABEL_CHARS).collect();
    if one_line.chars().count() > MAX_LABEL_CHARS {
        short.push('…');
    }
    short
}

/// [`short_label`], escaped.
fn escape_label(label: &str) -> String {
    escape_xml(&short_label(label))
}

/// Characters of the label as drawn (for label placement).
fn label_chars(label: &str) -> usize {
    short_label(label).chars().count()
}

#[cfg(test)]
mod tests;
