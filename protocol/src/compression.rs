//! Compressed bodies and payloads, and the one rule for how far they may decompress.
//!
//! Nothing is decompressed beyond [`MAX_DECOMPRESSED_BYTES`], whatever carried it: an
//! examon-common `bulk` payload over MQTT, a KairosDB or line-protocol body over HTTP (gzip,
//! [`gunzip`]) or a Prometheus remote-write request (snappy). A few kilobytes of gzip can
//! inflate to gigabytes (a "gzip bomb"); the limit bounds the memory one message or request
//! can take, far above what real clients send in one piece (Telegraf and Prometheus batches
//! are a few MB).

use std::io::Read;

use snafu::Snafu;

/// The most any compressed body or payload may decompress to: 256 MiB.
pub const MAX_DECOMPRESSED_BYTES: usize = 256 << 20;

/// Why a gzip body or payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, Snafu)]
pub enum GunzipError {
    /// It is not gzip, or it is damaged.
    #[snafu(display("does not inflate: {message}"))]
    Corrupt {
        /// The decoder's reason.
        message: String,
    },
    /// It inflates beyond [`MAX_DECOMPRESSED_BYTES`].
    #[snafu(display("inflates beyond {limit} bytes"))]
    TooLarge {
        /// The limit it passed.
        limit: usize,
    },
}

/// Inflates gzip `data`, refusing it once it passes [`MAX_DECOMPRESSED_BYTES`].
pub fn gunzip(data: &[u8]) -> Result<Vec<u8>, GunzipError> {
    gunzip_at_most(data, MAX_DECOMPRESSED_BYTES)
}

fn gunzip_at_most(data: &[u8], limit: usize) -> Result<Vec<u8>, GunzipError> {
    let mut inflated = Vec::new();
    flate2::read::GzDecoder::new(data)
        .take(limit as u64 + 1)
        .read_to_end(&mut inflated)
        .map_err(|e| GunzipError::Corrupt {
            message: e.to_string(),
        })?;
    if inflated.len() > limit {
        return TooLargeSnafu { limit }.fail();
    }
    Ok(inflated)
}

/// gzip of `data`, for tests.
#[cfg(test)]
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// A gzip bomb: a few hundred kilobytes that inflate past [`MAX_DECOMPRESSED_BYTES`], made
/// without compressing that much. One deflate block of 1 MiB of zeros, ended by a sync flush,
/// refers to no byte before it, so repeating it repeats its output. The trailer is left out:
/// a reader that keeps to the limit stops before it.
#[cfg(test)]
pub(crate) fn gzip_bomb() -> Vec<u8> {
    let mut compress = flate2::Compress::new(flate2::Compression::best(), false);
    let mut block = Vec::with_capacity(64 << 10);
    compress
        .compress_vec(&[0; 1 << 20], &mut block, flate2::FlushCompress::Sync)
        .unwrap();
    let mut bomb = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    for _ in 0..(MAX_DECOMPRESSED_BYTES >> 20) + 1 {
        bomb.extend_from_slice(&block);
    }
    bomb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflates_up_to_the_limit() {
        let text = b"load,node=n1 value=1 1\n".repeat(100);
        assert_eq!(gunzip(&gzip(&text)).unwrap(), text);
        assert_eq!(gunzip_at_most(&gzip(&text), text.len()).unwrap(), text);
        assert_eq!(
            gunzip_at_most(&gzip(&text), text.len() - 1),
            Err(GunzipError::TooLarge {
                limit: text.len() - 1
            })
        );
        assert!(matches!(
            gunzip(b"not gzip"),
            Err(GunzipError::Corrupt { .. })
        ));
        assert!(matches!(
            gunzip(&gzip(&text)[..10]),
            Err(GunzipError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_bomb_is_refused() {
        let bomb = gzip_bomb();
        assert!(bomb.len() < 1 << 20, "{}", bomb.len());
        assert_eq!(
            gunzip(&bomb),
            Err(GunzipError::TooLarge {
                limit: MAX_DECOMPRESSED_BYTES
            })
        );
    }
}
