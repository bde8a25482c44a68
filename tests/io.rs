//! safetensors round trips and refusal of broken files (truncated, bit-flipped) without panics; PNG output.
use gsure::io::safetensors::{write, Entry, File};
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gsure-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn safetensors_round_trip_with_metadata() {
    let path = tmp("rt.safetensors");
    let a: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
    let b = vec![-1.0f32; 3];
    let meta = serde_json::json!({"config": "tiny", "step": 7});
    let entries = [
        Entry { name: "param/a".into(), shape: vec![3, 4], data: &a },
        Entry { name: "param/b".into(), shape: vec![3], data: &b },
    ];
    write(&path, &entries, &meta).unwrap();
    let f = File::open(&path).unwrap();
    assert_eq!(f.meta(), &meta);
    assert_eq!(f.names(), vec!["param/a", "param/b"]);
    assert_eq!(f.f32("param/a").unwrap(), (vec![3, 4], a));
    let err = f.f32("param/c").unwrap_err().to_string();
    assert!(err.contains("param/c") && err.contains("rt.safetensors"), "{err}");
}

#[test]
fn broken_files_are_refused_without_panicking() {
    let path = tmp("good.safetensors");
    let a: Vec<f32> = (0..64).map(|i| i as f32).collect();
    write(&path, &[Entry { name: "x".into(), shape: vec![8, 8], data: &a }], &serde_json::json!({})).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let bad = tmp("bad.safetensors");
    for cut in [0, 4, 8, 20, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&bad, &bytes[..cut]).unwrap();
        let err = File::open(&bad).err().expect("truncated file must be refused").to_string();
        assert!(err.contains("bad.safetensors"), "{err}");
    }
    // Bit flips anywhere: either refused with an error or read (a flip inside the data is undetectable).
    for i in (0..bytes.len()).step_by(3) {
        let mut flipped = bytes.clone();
        flipped[i] ^= 0x5a;
        std::fs::write(&bad, &flipped).unwrap();
        if let Ok(f) = File::open(&bad) {
            for name in f.names() {
                let _ = f.f32(name);
            }
        }
    }
}

#[test]
fn png_grid_is_written() {
    let path = tmp("grid.png");
    let imgs: Vec<f32> = (0..5 * 8 * 8).map(|i| (i % 17) as f32 / 8.0 - 1.0).collect();
    gsure::io::image::grid_png(&path, &imgs, [5, 1, 8, 8], -1.0, 1.0).unwrap();
    let data = std::fs::read(&path).unwrap();
    assert_eq!(&data[1..4], b"PNG");
    assert!(gsure::io::image::grid_png(&path, &imgs, [5, 2, 8, 8], -1.0, 1.0).is_err());
    assert!(gsure::io::image::grid_png(&path, &imgs, [1, 5, 8, 8], -1.0, 1.0).is_err());
}

#[test]
fn complex_grid_shows_the_real_part() {
    let real: Vec<f32> = (0..3 * 8 * 8).map(|i| (i % 13) as f32 / 6.0 - 1.0).collect();
    let complex: Vec<f32> = (0..3)
        .flat_map(|i| {
            let re = real[i * 64..(i + 1) * 64].iter().copied();
            re.chain((0..64).map(move |j| ((i * 64 + j) % 7) as f32 / 3.0 - 1.0))
        })
        .collect();
    let (a, b) = (tmp("grid_real.png"), tmp("grid_complex.png"));
    gsure::io::image::grid_png(&a, &real, [3, 1, 8, 8], -1.0, 1.0).unwrap();
    gsure::io::image::grid_png(&b, &complex, [3, 2, 8, 8], -1.0, 1.0).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

#[test]
fn stale_temp_files_of_dead_writers_are_removed_and_nothing_else() {
    let dir = std::env::temp_dir().join(format!("gsure-stale-temps-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // pid 4194304 is above Linux's largest (2^22): never alive.
    let dead = dir.join(".checkpoint.safetensors.tmp4194304");
    let ours = dir.join(format!(".checkpoint.safetensors.tmp{}", std::process::id()));
    let keep = [dir.join("checkpoint.safetensors"), dir.join(".notes.tmpx"), dir.join(".tmp123"), ours.clone()];
    for p in keep.iter().chain([&dead]) {
        std::fs::write(p, b"x").unwrap();
    }
    assert_eq!(gsure::io::outputs::remove_stale_temps(&dir), vec![dead.clone()]);
    assert!(!dead.exists());
    for p in &keep {
        assert!(p.exists(), "{} was kept", p.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
