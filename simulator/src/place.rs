//! `strew-sim place`: a dry-run placement over a nodes file.
//!
//! Owns the subcommand's arguments ([`PlaceArgs`]), reading the nodes CSV
//! (`id,lat,lon,free_bytes`, further columns ignored) into a grid view,
//! calling the coordinator's placement once, and printing the decision as
//! text or as the JSON object of SPEC §4. It must not place anything itself:
//! every choice comes from `strew_coordinator::place`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use serde::Serialize;
use strew_coordinator::{
    DistanceRange, GeoPoint, GridView, NodeId, NodeProfile, PlacementRefusal, PlacementRequest,
    Redundancy, parse_size, place,
};

/// Arguments of `strew-sim place`.
#[derive(clap::Args, Debug)]
pub struct PlaceArgs {
    /// Nodes file: CSV with header `id,lat,lon,free_bytes` (further columns ignored).
    #[arg(long)]
    pub nodes: PathBuf,
    /// The source's location, `LAT,LON` in degrees.
    #[arg(long, allow_hyphen_values = true)]
    pub source: GeoPoint,
    /// Source → target distance range, e.g. `200km..2000km`, `100km..`, `..500mi`.
    #[arg(long, default_value = "..")]
    pub backup_distance: DistanceRange,
    /// Distance range between every two targets, e.g. `100km..`.
    #[arg(long, default_value = "..")]
    pub spread: DistanceRange,
    /// Data packets to place; each stripe adds its parity packets or replicas.
    #[arg(long)]
    pub packets: u64,
    /// Size of one packet, e.g. `1MiB`, `4MB`.
    #[arg(long, default_value = "1MiB", value_parser = parse_size_arg)]
    pub packet_size: u64,
    /// `erasure:K+M` or `replicas:N`.
    #[arg(long, default_value = "erasure:4+2")]
    pub redundancy: Redundancy,
    /// Seed of the placement's random choices (same seed, same answer).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_size_arg(text: &str) -> Result<u64, String> {
    parse_size(text).map_err(|e| e.to_string())
}

/// One row of the nodes file, as the file names it.
#[derive(Clone, Debug)]
struct NodeRow {
    label: String,
    location: GeoPoint,
}

/// Reads the nodes file into a grid view. Node ids are synthetic (the row's
/// index); the file's own `id` text is kept for output.
fn load_nodes(path: &Path) -> anyhow::Result<(GridView, BTreeMap<NodeId, NodeRow>)> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_path(path)
        .with_context(|| format!("cannot read nodes file {}", path.display()))?;
    let headers = reader
        .headers()
        .with_context(|| format!("nodes file {} has no header", path.display()))?
        .clone();
    let column = |name: &str| -> anyhow::Result<usize> {
        headers.iter().position(|h| h == name).with_context(|| {
            format!(
                "nodes file {} lacks the column {name:?} (header must contain id,lat,lon,free_bytes)",
                path.display()
            )
        })
    };
    let (c_id, c_lat, c_lon, c_free) = (
        column("id")?,
        column("lat")?,
        column("lon")?,
        column("free_bytes")?,
    );
    let mut profiles = Vec::new();
    let mut rows = BTreeMap::new();
    let mut labels = BTreeMap::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = record.with_context(|| format!("{}:{line}", path.display()))?;
        let field = |c: usize, name: &str| -> anyhow::Result<&str> {
            record
                .get(c)
                .with_context(|| format!("{}:{line}: missing {name}", path.display()))
        };
        let label = field(c_id, "id")?.to_string();
        let lat: f64 = field(c_lat, "lat")?
            .parse()
            .with_context(|| format!("{}:{line}: lat is not a number", path.display()))?;
        let lon: f64 = field(c_lon, "lon")?
            .parse()
            .with_context(|| format!("{}:{line}: lon is not a number", path.display()))?;
        let location =
            GeoPoint::new(lat, lon).with_context(|| format!("{}:{line}", path.display()))?;
        let free = parse_size(field(c_free, "free_bytes")?)
            .with_context(|| format!("{}:{line}: free_bytes", path.display()))?;
        if let Some(first) = labels.insert(label.clone(), line) {
            bail!(
                "{}:{line}: node id {label:?} already appears on line {first}",
                path.display()
            );
        }
        let index = u32::try_from(i).context("more than 2^32 nodes")?;
        let mut raw = [0u8; 32];
        raw[..4].copy_from_slice(&index.to_be_bytes());
        let id = NodeId(raw);
        profiles.push(NodeProfile::new(id, location, free, 0));
        rows.insert(id, NodeRow { label, location });
    }
    Ok((GridView::from_profiles(profiles), rows))
}

#[derive(Serialize)]
struct TargetOut<'a> {
    id: &'a str,
    lat: f64,
    lon: f64,
    packets: u64,
    distance_km: f64,
}

#[derive(Serialize)]
struct PlacedOut<'a> {
    feasible: bool,
    targets: Vec<TargetOut<'a>>,
    stripes: Vec<Vec<&'a str>>,
    packets: u64,
    stripe_width: usize,
}

#[derive(Serialize)]
struct RefusedOut<'a> {
    feasible: bool,
    explanation: String,
    refusal: &'a PlacementRefusal,
}

/// Runs `strew-sim place`: prints the placement (or the refusal) and returns Ok
/// either way; errors are reserved for unreadable input. A closed stdout
/// (`| head`) is a normal end, not an error.
pub fn run(args: &PlaceArgs) -> anyhow::Result<()> {
    let text = render(args)?;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// The whole output of `strew-sim place`, as text.
fn render(args: &PlaceArgs) -> anyhow::Result<String> {
    let mut text = String::new();
    let (view, rows) = load_nodes(&args.nodes)?;
    args.redundancy.validate()?;
    let stripes = args.packets.div_ceil(args.redundancy.data_packets() as u64);
    let req = PlacementRequest {
        source: args.source,
        source_node: None,
        backup_distance: args.backup_distance,
        spread: args.spread,
        redundancy: args.redundancy,
        stripes: u32::try_from(stripes).context("too many packets for one placement")?,
        packet_size: args.packet_size,
    };
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(args.seed);
    let label = |id: &NodeId| rows.get(id).map_or("?", |r| r.label.as_str());
    match place(&view, &req, &mut rng) {
        Ok(placement) => {
            let counts = placement.packets_per_target();
            let targets: Vec<TargetOut<'_>> = placement
                .targets
                .iter()
                .filter_map(|id| {
                    let row = rows.get(id)?;
                    Some(TargetOut {
                        id: &row.label,
                        lat: row.location.lat,
                        lon: row.location.lon,
                        packets: counts.get(id).copied().unwrap_or(0),
                        distance_km: strew_coordinator::haversine_km(&args.source, &row.location),
                    })
                })
                .collect();
            let stripes_out: Vec<Vec<&str>> = placement
                .stripes
                .iter()
                .map(|s| s.iter().map(label).collect())
                .collect();
            if args.json {
                let out = PlacedOut {
                    feasible: true,
                    packets: req.total_packets(),
                    stripe_width: req.redundancy.width(),
                    targets,
                    stripes: stripes_out,
                };
                writeln!(text, "{}", serde_json::to_string(&out)?)?;
            } else {
                writeln!(
                    text,
                    "feasible: {} packets ({} stripes of {}) on {} targets",
                    req.total_packets(),
                    req.stripes,
                    req.redundancy,
                    targets.len()
                )?;
                for t in &targets {
                    writeln!(
                        text,
                        "  {:<24} {:>9.4},{:>10.4}  {:>7.1} km  {:>6} packets",
                        t.id, t.lat, t.lon, t.distance_km, t.packets
                    )?;
                }
            }
        }
        Err(refusal) => {
            if args.json {
                let out = RefusedOut {
                    feasible: false,
                    explanation: refusal.to_string(),
                    refusal: &refusal,
                };
                writeln!(text, "{}", serde_json::to_string(&out)?)?;
            } else {
                writeln!(text, "infeasible: {refusal}")?;
            }
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn nodes_file_loads_and_rejects_duplicates_and_bad_rows() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("nodes.csv");
        let mut f = std::fs::File::create(&good).unwrap();
        writeln!(f, "id,lat,lon,free_bytes,city").unwrap();
        writeln!(f, "a,48.85,2.35,10GiB,Paris").unwrap();
        writeln!(f, "b,51.5,-0.12,1000000,London").unwrap();
        drop(f);
        let (view, rows) = load_nodes(&good).unwrap();
        assert_eq!(view.len(), 2);
        let labels: Vec<&str> = rows.values().map(|r| r.label.as_str()).collect();
        assert_eq!(labels, vec!["a", "b"]);

        let dup = dir.path().join("dup.csv");
        std::fs::write(&dup, "id,lat,lon,free_bytes\na,1,1,5\na,2,2,5\n").unwrap();
        let err = load_nodes(&dup).unwrap_err().to_string();
        assert!(err.contains("already appears"), "{err}");

        let bad = dir.path().join("bad.csv");
        std::fs::write(&bad, "id,lat,lon,free_bytes\na,100,1,5\n").unwrap();
        assert!(load_nodes(&bad).is_err());

        let missing = dir.path().join("missing.csv");
        std::fs::write(&missing, "id,lat,lon\na,1,1\n").unwrap();
        let err = load_nodes(&missing).unwrap_err().to_string();
        assert!(err.contains("free_bytes"), "{err}");
    }
}
