//! ClusterGAN's cluster code: the softmax over the last values of a latent vector, as the edge
//! runtime computes it on every target (the trainer's candle encoder applies candle's softmax;
//! the edge parity tests hold the two together).

/// The softmax of the last `tail` values of the latent vector `z`, in place (ClusterGAN's
/// cluster code; `tail` 0 leaves `z` as it is). The largest value is subtracted first, so no
/// logit overflows, and the sum is taken in f64: the trainer and every runtime compute the same
/// probabilities to the last bit or two.
pub fn softmax_tail(z: &mut [f32], tail: usize) {
    let Some(start) = z.len().checked_sub(tail).filter(|_| tail > 0) else {
        return;
    };
    let code = &mut z[start..];
    let max = code.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    for v in code.iter_mut() {
        *v = libm::expf(*v - max);
        sum += f64::from(*v);
    }
    let inv = (1.0 / sum) as f32;
    code.iter_mut().for_each(|v| *v *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_softmax_tail_is_a_distribution_over_the_last_values_only() {
        let mut z = [5.0f32, -1.0, 1000.0, 1000.0, 999.0];
        softmax_tail(&mut z, 3);
        assert_eq!(z[..2], [5.0, -1.0]);
        let e = (-1f64).exp();
        let want = [1.0 / (2.0 + e), 1.0 / (2.0 + e), e / (2.0 + e)];
        for (got, want) in z[2..].iter().zip(want) {
            assert!((f64::from(*got) - want).abs() < 1e-6, "{z:?}");
        }
        let mut same = [0.5f32, 2.0];
        softmax_tail(&mut same, 0);
        assert_eq!(same, [0.5, 2.0]);
    }
}
