//! Name-based ids (UUID version 5): the same namespace and name always give
//! the same id. The engine derives every id it makes this way, so a replay
//! or a retry after a crash makes the same ids again.
//!
//! `uuid`'s own `Uuid::new_v5` hashes with `sha1_smol`, a portable SHA-1,
//! and the engine makes two or three ids per event. RustCrypto's `sha1`
//! computes the same digest with the CPU's SHA extensions where there are
//! any (detected at run time): half the time per id on the benchmark
//! machine (docs/benchmarks.md). The ids are identical: a test compares
//! them with `Uuid::new_v5`.

use sha1::{Digest, Sha1};
use uuid::Uuid;

/// The version 5 UUID of `name` in `namespace`, as RFC 9562 defines it
/// (and `Uuid::new_v5` computes it).
pub fn name_based_id(namespace: &Uuid, name: &[u8]) -> Uuid {
    let mut hasher = Sha1::new();
    hasher.update(namespace.as_bytes());
    hasher.update(name);
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_equal_what_uuid_v5_makes() {
        let namespaces = [Uuid::nil(), Uuid::NAMESPACE_URL, Uuid::from_u128(0x0195_0000_0000_7000_8000_0000_0000_0001)];
        // Names of every length around SHA-1's 64-byte block and its
        // padding boundary (55/56 bytes with the 16-byte namespace in front).
        let long: Vec<u8> = (0..=200u8).map(|b| b.wrapping_mul(37)).collect();
        for namespace in &namespaces {
            for len in 0..long.len() {
                let name = &long[..len];
                assert_eq!(name_based_id(namespace, name), Uuid::new_v5(namespace, name), "length {len}");
            }
            for counter in 0u64..1_000 {
                let name = counter.to_be_bytes();
                assert_eq!(name_based_id(namespace, &name), Uuid::new_v5(namespace, &name));
            }
        }
    }
}
