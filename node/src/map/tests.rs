//! The map's rendering: markers, rings, labels, legend, bad input.

use super::*;

/// A minimal XML well-formedness check: one root element, tags nest and
/// match, attributes are quoted, `&` only starts a known entity or a
/// character reference, no `<` inside text or attribute values.
fn check_well_formed(xml: &str) -> Result<(), String> {
    let b = xml.as_bytes();
    let mut i = 0;
    let mut stack: Vec<&str> = Vec::new();
    let mut roots = 0;
    let entity_ok = |s: &str| -> bool {
        let Some(end) = s.find(';') else { return false };
        let name = &s[1..end];
        matches!(name, "amp" | "lt" | "gt" | "quot" | "apos")
            || (name.starts_with('#')
                && name[1..].chars().all(|c| c.is_ascii_digit())
                && name.len() > 1)
    };
    while i < b.len() {
        if b[i] == b'<' {
            let rest = &xml[i..];
            if rest.starts_with("<?") {
                i += rest.find("?>").ok_or("unterminated <?")? + 2;
            } else if rest.starts_with("<!--") {
                i += rest.find("-->").ok_or("unterminated comment")? + 3;
            } else if let Some(close) = rest.strip_prefix("</") {
                let end = close.find('>').ok_or("unterminated end tag")?;
                let name = close[..end].trim();
                match stack.pop() {
                    Some(open) if open == name => {}
                    other => return Err(format!("</{name}> closes {other:?}")),
                }
                i += 2 + end + 1;
            } else {
                // Start tag: name, then attributes until > or />.
                let mut j = i + 1;
                while j < b.len() && !b[j].is_ascii_whitespace() && b[j] != b'>' && b[j] != b'/' {
                    j += 1;
                }
                let name = &xml[i + 1..j];
                if name.is_empty() {
                    return Err(format!("empty tag name at {i}"));
                }
                loop {
                    while j < b.len() && b[j].is_ascii_whitespace() {
                        j += 1;
                    }
                    if j >= b.len() {
                        return Err("unterminated start tag".into());
                    }
                    if b[j] == b'>' {
                        if stack.is_empty() {
                            roots += 1;
                        }
                        stack.push(name);
                        j += 1;
                        break;
                    }
                    if xml[j..].starts_with("/>") {
                        if stack.is_empty() {
                            roots += 1;
                        }
                        j += 2;
                        break;
                    }
                    let eq = xml[j..].find('=').ok_or("attribute without =")? + j;
                    let attr = &xml[j..eq];
                    if attr.is_empty()
                        || attr.contains(|c: char| c.is_whitespace() || c == '<' || c == '>')
                    {
                        return Err(format!("bad attribute name {attr:?}"));
                    }
                    let quote = b.get(eq + 1).copied().unwrap_or(0);
                    if quote != b'"' && quote != b'\'' {
                        return Err(format!("unquoted attribute {attr}"));
                    }
                    let close = xml[eq + 2..]
                        .find(quote as char)
                        .ok_or("unterminated value")?
                        + eq
                        + 2;
                    let value = &xml[eq + 2..close];
                    if value.contains('<') {
                        return Err(format!("< in attribute {attr}"));
                    }
                    for (k, _) in value.match_indices('&') {
                        if !entity_ok(&value[k..]) {
                            return Err(format!("bad entity in attribute {attr}"));
                        }
                    }
                    j = close + 1;
                }
                i = j;
            }
        } else {
            if stack.is_empty() && !b[i].is_ascii_whitespace() {
                return Err(format!("text outside the root at {i}"));
            }
            if b[i] == b'&' && !entity_ok(&xml[i..]) {
                return Err(format!("bad entity at {i}"));
            }
            i += 1;
        }
    }
    if !stack.is_empty() {
        return Err(format!("unclosed elements {stack:?}"));
    }
    if roots != 1 {
        return Err(format!("{roots} root elements"));
    }
    Ok(())
}

fn target(lat: f64, lon: f64, label: &str, packets: u64, up: bool) -> MapTarget {
    MapTarget {
        lat,
        lon,
        label: label.to_string(),
        packets,
        up,
    }
}

/// Paris with six European targets, one of them down.
fn paris(cities: Vec<MapCity>) -> MapInput {
    MapInput {
        title: "strew — where the packets of 'photos' are".to_string(),
        source: MapSource {
            lat: 48.8566,
            lon: 2.3522,
            label: "Paris".to_string(),
        },
        targets: vec![
            target(51.5074, -0.1278, "London", 18, true),
            target(52.3676, 4.9041, "Amsterdam", 17, true),
            target(50.1109, 8.6821, "Frankfurt", 16, true),
            target(45.4642, 9.1900, "Milan", 17, false),
            target(41.3874, 2.1686, "Barcelona", 19, true),
            target(40.4168, -3.7038, "Madrid", 15, true),
        ],
        min_km: Some(200.0),
        max_km: Some(2000.0),
        spread_min_km: Some(100.0),
        cities,
    }
}

/// Auckland with targets on both sides of the antimeridian.
fn auckland(cities: Vec<MapCity>) -> MapInput {
    MapInput {
        title: "strew — packets of 'farm-records' around the antimeridian".to_string(),
        source: MapSource {
            lat: -36.8485,
            lon: 174.7633,
            label: "Auckland".to_string(),
        },
        targets: vec![
            target(-33.8688, 151.2093, "Sydney", 6, true),
            target(-18.1416, 178.4419, "Suva", 6, true),
            target(-22.2758, 166.4580, "Nouméa", 5, true),
            target(-21.1394, -175.2018, "Nukuʻalofa", 6, false),
            target(-13.8333, -171.7667, "Apia", 6, true),
            target(-37.8136, 144.9631, "Melbourne", 7, true),
        ],
        min_km: Some(1000.0),
        max_km: Some(3500.0),
        spread_min_km: Some(500.0),
        cities,
    }
}

fn embedded_cities() -> Vec<MapCity> {
    cities_from(CityTable::embedded().expect("the embedded city table parses"))
}

type Segment = ((f64, f64), (f64, f64));

/// The segments of a path made only of M and L commands (None for other paths).
fn line_segments(d: &str) -> Option<Vec<Segment>> {
    if d.contains(|c: char| c.is_ascii_alphabetic() && c != 'M' && c != 'L') {
        return None;
    }
    let starts: Vec<usize> = d.match_indices(['M', 'L']).map(|(i, _)| i).collect();
    let mut segments = Vec::new();
    let mut prev: Option<(f64, f64)> = None;
    for (n, &at) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(d.len());
        let (x, y) = d[at + 1..end].split_once(' ')?;
        let point = (x.parse().ok()?, y.parse().ok()?);
        if &d[at..at + 1] == "L" {
            segments.push((prev?, point));
        }
        prev = Some(point);
    }
    Some(segments)
}

#[test]
fn the_checker_rejects_broken_xml() {
    assert!(check_well_formed("<?xml version=\"1.0\"?>\n<a x='1'><b/>t &amp; u</a>").is_ok());
    for bad in [
        "<a><b></a>",
        "<a>x & y</a>",
        "<a x=1/>",
        "<a/><b/>",
        "<a x=\"<\"/>",
        "<a>",
        "<a>&bogus;</a>",
        "<a x=",
    ] {
        assert!(check_well_formed(bad).is_err(), "{bad} passed");
    }
}

#[test]
fn the_map_is_well_formed_xml() {
    let mut input = paris(vec![
        MapCity {
            lat: 48.85,
            lon: 2.35,
            population: 2_100_000,
        },
        MapCity {
            lat: 45.76,
            lon: 4.83,
            population: 500_000,
        },
        MapCity {
            lat: 43.3,
            lon: 5.4,
            population: 80_000,
        },
        MapCity {
            lat: 47.2,
            lon: -1.55,
            population: 3_000,
        },
    ]);
    input.targets[2].label = "Frank\"furt' <a> & \u{1} \u{FFFF}".to_string();
    let svg = render_svg(&input).expect("valid input");
    check_well_formed(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
    assert!(svg.starts_with("<?xml"));
    assert_eq!(svg.matches("h0").count(), 4, "four city dots");
}

#[test]
fn labels_are_escaped() {
    let mut input = paris(Vec::new());
    input.title = "<script>alert('x')</script>".to_string();
    input.source.label = "home & <office>".to_string();
    input.targets[0].label = "<&>".to_string();
    let svg = render_svg(&input).expect("valid input");
    assert!(!svg.contains("<script>"));
    assert!(!svg.contains("<&>"));
    assert!(!svg.contains("<office>"));
    assert!(svg.contains("&lt;script&gt;alert(&apos;x&apos;)&lt;/script&gt;"));
    assert!(svg.contains(">home &amp; &lt;office&gt; (source)</text>"));
    assert!(svg.contains(">&lt;&amp;&gt; · 18 packets</text>"));
    check_well_formed(&svg).expect("escaped output is well-formed");
}

#[test]
fn long_and_multi_line_labels_are_shortened_to_one_line() {
    let long = "x".repeat(200);
    assert_eq!(short_label(&long).chars().count(), MAX_LABEL_CHARS + 1);
    assert!(short_label(&long).ends_with('…'));
    assert_eq!(short_label(" two\nlines "), "two lines");
    assert_eq!(escape_xml("a\u{0}b"), "a\u{FFFD}b");
}

#[test]
fn every_target_appears_with_its_packet_count() {
    let input = paris(Vec::new());
    let svg = render_svg(&input).expect("valid input");
    for t in &input.targets {
        let state = if t.up { "" } else { " (down)" };
        let label = format!(">{} · {} packets{state}</text>", t.label, t.packets);
        assert!(svg.contains(&label), "{label} missing");
    }
    // Markers: five green, one red (Milan) with a cross.
    assert_eq!(
        svg.matches(&format!("r=\"6\" fill=\"{COLOR_UP}\"")).count(),
        5
    );
    assert_eq!(
        svg.matches(&format!("r=\"6\" fill=\"{COLOR_DOWN}\""))
            .count(),
        1
    );
    assert!(svg.contains("Milan — 640 km — 17 packets — down"));
    assert!(svg.contains("6 targets hold 102 packets (17 on targets that are down)"));
}

#[test]
fn labels_do_not_overlap_when_there_is_room() {
    let svg = render_svg(&paris(Vec::new())).expect("valid input");
    let mut boxes = Vec::new();
    for text in svg
        .split("<text ")
        .skip(1)
        .filter(|t| t.contains("paint-order"))
    {
        let attr = |name: &str| -> f64 {
            let at = text.find(&format!("{name}=\"")).expect("attribute") + name.len() + 2;
            let end = text[at..].find('"').expect("closed") + at;
            text[at..end].parse().expect("number")
        };
        let content =
            &text[text.find('>').expect("content") + 1..text.find("</text>").expect("end")];
        let size = if text.contains("font-size=\"12\"") {
            12.0
        } else {
            11.0
        };
        let (x, y) = (attr("x"), attr("y"));
        let w = content.chars().count() as f64 * size * 0.5;
        boxes.push([x, y - size, x + w, y]);
    }
    assert_eq!(boxes.len(), 7, "source and six targets");
    for (i, a) in boxes.iter().enumerate() {
        for b in &boxes[i + 1..] {
            assert!(!overlaps(a, b), "{a:?} and {b:?} overlap");
        }
    }
}

#[test]
fn the_legend_states_bounds_and_nearest_and_farthest_target() {
    let input = paris(Vec::new());
    let svg = render_svg(&input).expect("valid input");
    let source = GeoPoint::new(48.8566, 2.3522).expect("valid point");
    let d: Vec<f64> = input
        .targets
        .iter()
        .map(|t| {
            haversine_km(
                &source,
                &GeoPoint {
                    lat: t.lat,
                    lon: t.lon,
                },
            )
        })
        .collect();
    let nearest = d.iter().copied().fold(f64::INFINITY, f64::min);
    let farthest = d.iter().copied().fold(0.0, f64::max);
    assert!(svg.contains("backup distance 200 km – 2000 km"));
    assert!(svg.contains("packet spread at least 100 km between any two targets"));
    let line = format!("nearest target {nearest:.0} km, farthest {farthest:.0} km");
    assert!(svg.contains(&line), "{line} missing");
    // London is nearest (≈ 344 km), Madrid farthest (≈ 1054 km).
    assert!((340.0..350.0).contains(&nearest), "{nearest}");
    assert!((1050.0..1060.0).contains(&farthest), "{farthest}");
    assert_eq!(bounds_text(Some(50.0), None), "at least 50 km");
    assert_eq!(bounds_text(None, Some(800.0)), "at most 800 km");
    assert_eq!(bounds_text(None, None), "unbounded");
    let mut none = paris(Vec::new());
    none.targets.clear();
    let svg = render_svg(&none).expect("valid input");
    assert!(svg.contains(">no targets</text>"));
}

#[test]
fn a_map_across_the_antimeridian_has_no_segment_jumping_across_it() {
    for input in [
        auckland(Vec::new()),
        MapInput {
            title: "north pole".to_string(),
            source: MapSource {
                lat: 78.2,
                lon: 15.6,
                label: "Longyearbyen".to_string(),
            },
            targets: vec![target(64.8, -147.7, "Fairbanks", 3, true)],
            min_km: None,
            max_km: Some(4000.0),
            spread_min_km: None,
            cities: Vec::new(),
        },
    ] {
        let svg = render_svg(&input).expect("valid input");
        check_well_formed(&svg).expect("well-formed");
        let frame = svg.split("<rect ").nth(3).expect("the map frame");
        let at = frame.find("width=\"").expect("width") + 7;
        let width: f64 = frame[at..at + frame[at..].find('"').expect("closed")]
            .parse()
            .expect("number");
        let mut polylines = 0;
        for path in svg.split("<path d=\"").skip(1) {
            let d = &path[..path.find('"').expect("closed attribute")];
            let Some(segments) = line_segments(d) else {
                continue;
            };
            polylines += 1;
            for ((x0, _), (x1, _)) in segments {
                assert!(
                    (x1 - x0).abs() < width / 4.0,
                    "{}: segment jumps across the map in {d}",
                    input.title
                );
            }
        }
        assert!(
            polylines > input.targets.len(),
            "{}: rings and lines drawn",
            input.title
        );
    }
    // Auckland's map is centred on the Pacific and cropped, not the whole world.
    let svg = render_svg(&auckland(Vec::new())).expect("valid input");
    let meridian = |label: &str| {
        format!("text-anchor=\"middle\" font-size=\"10\" fill=\"#777\">{label}</text>")
    };
    assert!(svg.contains(&meridian("180°")));
    assert!(
        !svg.contains(&meridian("0°")),
        "Greenwich is off the cropped map"
    );
}

#[test]
fn bad_input_is_refused_with_a_typed_error() {
    let mut input = paris(Vec::new());
    input.targets[1].lat = f64::NAN;
    assert!(
        matches!(render_svg(&input), Err(MapError::BadLocation { what, .. }) if what.contains("Amsterdam"))
    );
    let mut input = paris(Vec::new());
    input.source.lon = 200.0;
    assert!(matches!(
        render_svg(&input),
        Err(MapError::BadLocation { .. })
    ));
    let mut input = paris(Vec::new());
    input.min_km = Some(3000.0);
    assert!(matches!(
        render_svg(&input),
        Err(MapError::InvertedBounds { .. })
    ));
    let mut input = paris(Vec::new());
    input.max_km = Some(-1.0);
    assert!(matches!(
        render_svg(&input),
        Err(MapError::BadDistance { .. })
    ));
    let mut input = paris(Vec::new());
    input.spread_min_km = Some(f64::INFINITY);
    assert!(matches!(
        render_svg(&input),
        Err(MapError::BadDistance { .. })
    ));
}

#[test]
fn city_dots_keep_the_biggest_cities_within_the_budget() {
    let view = View::fit(&[(0.0, 0.0)], true, 0.0, (0.0, 0.0, MAP_W, MAP_H));
    let mut cities: Vec<MapCity> = (0..1000u32)
        .map(|i| MapCity {
            lat: -40.0 + f64::from(i % 80),
            lon: -150.0 + f64::from(i / 80) * 20.0,
            population: 1000 + u64::from(i),
        })
        .collect();
    let big = MapCity {
        lat: 51.5,
        lon: -0.1,
        population: 9_000_000,
    };
    cities.push(big);
    let dot = |c: &MapCity| {
        let (x, y) = view.point(c.lat, c.lon);
        format!("M{x:.1} {y:.1}h0")
    };
    let all = city_layer(&view, &cities, usize::MAX);
    assert_eq!(all.matches("h0").count(), cities.len());
    let some = city_layer(&view, &cities, 200 * 14);
    let kept = some.matches("h0").count();
    assert!(kept > 100 && kept < 250, "{kept}");
    assert!(some.contains(&dot(&big)));
    assert!(
        !some.contains(&dot(&cities[0])),
        "the smallest city is left out"
    );
}

#[test]
fn the_whole_world_with_every_embedded_city_stays_under_3_mb() {
    let input = MapInput {
        title: "world".to_string(),
        source: MapSource {
            lat: 0.0,
            lon: 0.0,
            label: "source".to_string(),
        },
        targets: vec![
            target(35.7, 139.7, "Tokyo", 3, true),
            target(-33.9, 18.4, "Cape Town", 2, false),
        ],
        min_km: None,
        max_km: Some(15_000.0),
        spread_min_km: None,
        cities: embedded_cities(),
    };
    assert!(input.cities.len() > 30_000);
    let svg = render_svg(&input).expect("valid input");
    assert!(svg.len() < 3_000_000, "{} bytes", svg.len());
    assert!(
        svg.matches("h0").count() > 30_000,
        "continents need the cities"
    );
    check_well_formed(&svg).expect("well-formed");
}

/// Writes the examples in docs/img (run with `--ignored` after changing the drawing).
#[test]
#[ignore = "writes the documentation examples"]
fn write_the_documentation_examples() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/img");
    std::fs::create_dir_all(&dir).expect("create docs/img");
    for (name, input) in [
        ("map-example.svg", paris(embedded_cities())),
        ("map-example-pacific.svg", auckland(embedded_cities())),
    ] {
        let svg = render_svg(&input).expect("valid input");
        std::fs::write(dir.join(name), svg).expect("write the example");
    }
}
