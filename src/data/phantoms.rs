//! Random-ellipse phantoms in the spirit of Shepp–Logan: an outer "skull" ellipse, a darker interior and a
//! handful of smaller ellipses of random position, size, angle and intensity, summed, rendered with 4×4
//! supersampling and scaled to [-1, 1]. Generated in-process from a seed, at any size.
use super::ImageSet;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

struct Ellipse {
    cx: f64,
    cy: f64,
    a: f64,
    b: f64,
    angle: f64,
    value: f64,
}

impl Ellipse {
    fn contains(&self, x: f64, y: f64) -> bool {
        let (s, c) = self.angle.sin_cos();
        let (dx, dy) = (x - self.cx, y - self.cy);
        let (u, v) = (c * dx + s * dy, -s * dx + c * dy);
        (u / self.a).powi(2) + (v / self.b).powi(2) <= 1.0
    }
}

fn random_phantom(rng: &mut StdRng) -> Vec<Ellipse> {
    let mut e = Vec::new();
    let (a, b) = (rng.random_range(0.72..0.92), rng.random_range(0.82..0.97));
    let angle = rng.random_range(-0.2..0.2);
    e.push(Ellipse { cx: 0.0, cy: 0.0, a, b, angle, value: 1.0 });
    e.push(Ellipse { cx: 0.0, cy: -0.02, a: a * 0.9, b: b * 0.92, angle, value: -0.6 });
    for _ in 0..rng.random_range(3..7) {
        let r = rng.random_range(0.0..0.55);
        let th = rng.random_range(0.0..std::f64::consts::TAU);
        e.push(Ellipse {
            cx: r * th.cos() * a,
            cy: r * th.sin() * b,
            a: rng.random_range(0.05..0.3),
            b: rng.random_range(0.05..0.3),
            angle: rng.random_range(0.0..std::f64::consts::PI),
            value: rng.random_range(-0.3..0.5),
        });
    }
    e
}

/// `count` phantoms of `size`×`size` pixels, one channel, values in [-1, 1], reproducible from `seed`.
pub fn phantoms(count: usize, size: usize, seed: u64) -> ImageSet {
    phantoms_with_progress(count, size, seed, |_| {})
}

/// [`phantoms`], calling `done(i)` after image i (rendering is 16 supersamples a pixel: large sides take
/// seconds an image, which a command shows as progress).
pub fn phantoms_with_progress(count: usize, size: usize, seed: u64, mut done: impl FnMut(usize)) -> ImageSet {
    const SS: usize = 4;
    let mut images = Vec::with_capacity(count * size * size);
    for i in 0..count {
        let mut rng = StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let ellipses = random_phantom(&mut rng);
        for py in 0..size {
            for px in 0..size {
                let mut acc = 0.0;
                for sy in 0..SS {
                    for sx in 0..SS {
                        let x = ((px * SS + sx) as f64 + 0.5) / (size * SS) as f64 * 2.0 - 1.0;
                        let y = ((py * SS + sy) as f64 + 0.5) / (size * SS) as f64 * 2.0 - 1.0;
                        acc += ellipses.iter().filter(|e| e.contains(x, y)).map(|e| e.value).sum::<f64>();
                    }
                }
                let v = (acc / (SS * SS) as f64).clamp(0.0, 1.0);
                images.push((v * 2.0 - 1.0) as f32);
            }
        }
        done(i);
    }
    ImageSet { images, dims: [count, 1, size, size] }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn phantoms_are_reproducible_bounded_and_varied() {
        let a = phantoms(4, 16, 7);
        assert_eq!(a.dims, [4, 1, 16, 16]);
        assert_eq!(a.images, phantoms(4, 16, 7).images);
        assert!(a.images.iter().all(|v| (-1.0..=1.0).contains(v)));
        assert_ne!(a.images[..256], a.images[256..512], "different phantoms per index");
        assert_eq!(a.images[0], -1.0, "corners are background");
        let centre = a.images[8 * 16 + 8];
        assert!(centre > -1.0, "the centre lies inside the head");
    }
}
