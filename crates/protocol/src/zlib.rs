//! zlib (RFC 1950) binary frames: the server compresses large frames for clients that sent
//! `set_flag {binary:1}`; native clients inflate them with a size bound (no zlib bombs).

use std::io::{Read, Write};

use flate2::{read::ZlibDecoder, write::ZlibEncoder, Compression};

/// Compress UTF-8 JSON text into one complete zlib stream.
pub fn compress(text: &str) -> Vec<u8> {
    let mut enc = ZlibEncoder::new(Vec::with_capacity(text.len() / 2 + 16), Compression::fast());
    enc.write_all(text.as_bytes())
        .expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

/// Why a binary frame could not be inflated.
#[derive(Debug, PartialEq, Eq)]
pub enum InflateError {
    /// Not a valid zlib stream.
    Corrupt,
    /// Inflates to more than the allowed size.
    TooLarge,
    /// Not UTF-8 text.
    NotText,
}

/// Inflate one zlib stream, refusing output larger than `max_bytes`.
pub fn decompress(bytes: &[u8], max_bytes: usize) -> Result<String, InflateError> {
    let mut out = Vec::new();
    let mut dec = ZlibDecoder::new(bytes).take(max_bytes as u64 + 1);
    dec.read_to_end(&mut out)
        .map_err(|_| InflateError::Corrupt)?;
    if out.len() > max_bytes {
        return Err(InflateError::TooLarge);
    }
    String::from_utf8(out).map_err(|_| InflateError::NotText)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounds() {
        let text = "[\"multi\",[".to_owned() + &"[\"pong\",1],".repeat(1000) + "[\"pong\",2]]]";
        let z = compress(&text);
        assert!(z.len() < text.len() / 10);
        assert_eq!(&z[..1], &[0x78]);
        assert_eq!(decompress(&z, 1 << 20).unwrap(), text);
        assert_eq!(decompress(&z, 100), Err(InflateError::TooLarge));
        assert_eq!(decompress(b"not zlib", 100), Err(InflateError::Corrupt));
        let bomb = compress(&"\0".repeat(10 << 20));
        assert_eq!(decompress(&bomb, 64 << 10), Err(InflateError::TooLarge));
    }
}
