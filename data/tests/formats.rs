//! The files people already have, as pandas, R and NumPy write them (checked-in fixtures under
//! `tests/fixtures/`, written by `pandas.DataFrame.to_csv`, R's `write.csv` quoting and
//! `numpy.save`/`savez`), read by the whole-file and the streaming readers alike.

use std::io::Write;
use std::path::{Path, PathBuf};

use dekm_data::table::{LabelColumn, parse_csv};
use dekm_data::{Format, SampleStream};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn label(s: &str) -> LabelColumn {
    s.parse().unwrap()
}

/// Every sample of `path` through the streaming reader.
fn streamed(path: &Path) -> Vec<Vec<f32>> {
    let mut s = SampleStream::open(path, Format::from_path(path), None).unwrap();
    let (mut out, mut row) = (Vec::new(), Vec::new());
    while let Some(r) = s.next_into(&mut row) {
        r.unwrap();
        out.push(row.clone());
    }
    out
}

const FIRST: [f32; 4] = [5.1, 3.5, 1.4, 0.2];
const SPECIES: [&str; 3] = ["setosa", "versicolor", "virginica"];

#[test]
fn iris_as_pandas_r_and_tsv_write_it() {
    for (file, col) in [
        ("iris_pandas.csv", "species"),
        ("iris_r.csv", "Species"),
        ("iris.tsv", "species"),
    ] {
        let path = fixture(file);
        let bytes = std::fs::read(&path).unwrap();
        let t = parse_csv(&bytes, Some(&label(col)), &path).unwrap();
        // The unnamed row-index column of pandas and R is not a feature.
        assert_eq!(t.dim, 4, "{file}");
        assert_eq!(t.xs.len(), 30 * 4, "{file}");
        assert_eq!(t.xs[..4], FIRST, "{file}");
        assert_eq!(t.label_names, SPECIES, "{file}: labels by name, unquoted");
        let labels = t.labels.unwrap();
        assert_eq!((labels[0], labels[10], labels[29]), (0, 1, 2), "{file}");
        // The label column is text: without it, the readers name the offending cell.
        let err = parse_csv(&bytes, None, &path).unwrap_err().to_string();
        assert!(
            err.contains("column 6") || err.contains("column 5"),
            "{file}: {err}"
        );
        assert!(err.contains("'setosa'"), "{file}: {err}");
    }
    // Streaming (the edge CLI's reader) takes the same files without their label column.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.csv");
    let text = std::fs::read_to_string(fixture("iris_r.csv")).unwrap();
    let unlabelled: String = text
        .lines()
        .map(|l| format!("{}\n", l.rsplit_once(',').unwrap().0))
        .collect();
    std::fs::write(&path, &unlabelled).unwrap();
    let rows = streamed(&path);
    assert_eq!((rows.len(), rows[0].as_slice()), (30, &FIRST[..]));
    // gzip still recognised by its magic.
    let gz = dir.path().join("x.csv.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(unlabelled.as_bytes()).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    assert_eq!(streamed(&gz), rows);
}

#[test]
fn quoted_headers_and_labels_with_commas_and_quotes() {
    let path = fixture("quoted_nonnumeric.csv");
    let bytes = std::fs::read(&path).unwrap();
    let t = parse_csv(&bytes, Some(&label("kind")), &path).unwrap();
    assert_eq!(t.dim, 2);
    assert_eq!(t.xs, [0.5, 1., 1.5, 2., -2., 3., 3.25, 4.]);
    assert_eq!(t.label_names, ["a, left", "b \"right\"", "c"]);
    assert_eq!(t.labels.unwrap(), [0, 1, 0, 2]);
    // A quoted header name with a comma names its column.
    let t = parse_csv(&bytes, Some(&label("x, first")), &path);
    let err = t.unwrap_err().to_string();
    assert!(err.contains("'a, left' is not a number"), "{err}");
}

fn samples(name: &str) -> dekm_data::numpy::Samples {
    let path = fixture(name);
    dekm_data::numpy::read_samples(&std::fs::read(&path).unwrap(), &path, None).unwrap()
}

#[test]
fn numpy_dumps_of_any_dtype_shape_and_order() {
    use dekm_data::numpy::Layout;
    let gray = Layout::Image {
        channels: 1,
        height: 28,
        width: 28,
        channels_last: false,
    };
    // uint8 images (N, 28, 28) and (N, 28, 28, 1): the same images, channel-major.
    let a = samples("images_u8.npy");
    assert_eq!((a.layout, a.xs.len()), (gray, 3 * 784));
    assert!(
        a.xs.iter()
            .all(|&v| (0.0..=255.0).contains(&v) && v.fract() == 0.0)
    );
    assert!(a.xs.iter().any(|&v| v > 200.0), "bytes read as 0..255");
    let b = samples("images_u8_nhwc.npy");
    assert_eq!(b.xs, a.xs);
    assert!(matches!(
        b.layout,
        Layout::Image {
            channels: 1,
            height: 28,
            width: 28,
            channels_last: true
        }
    ));
    // A compressed archive of the same images (numpy.savez_compressed).
    let z = samples("images.npz");
    assert_eq!((z.layout, &z.xs), (gray, &a.xs));
    assert_eq!(z.labels, None);
    // Integers, Fortran order, big-endian floats.
    let i = samples("vectors_i64.npy");
    assert_eq!(i.layout, Layout::Vector(3));
    assert_eq!(i.xs, (0..12).map(|v| v as f32).collect::<Vec<_>>());
    let f = samples("vectors_f64_fortran.npy");
    assert_eq!(f.xs, [0., 0.25, 0.5, 0.75, 1., 1.25]);
    let be = samples("vectors_f32_be.npy");
    assert_eq!(be.xs, [0., 1., 2., 3., 4., 5.]);
    // An archive with samples x and labels y.
    let n = samples("bundle.npz");
    assert_eq!((n.layout, n.xs.len()), (Layout::Vector(3), 6));
    assert_eq!(n.labels.unwrap(), [0, 1]);
    assert_eq!(n.label_names, ["0", "1"]);
    // Streaming reads the same samples, archives included.
    for (file, whole) in [
        ("images_u8_nhwc.npy", &a.xs),
        ("images.npz", &a.xs),
        ("vectors_f32_be.npy", &be.xs),
    ] {
        let rows: Vec<f32> = streamed(&fixture(file)).concat();
        assert_eq!(&rows, whole, "{file}");
    }
}
