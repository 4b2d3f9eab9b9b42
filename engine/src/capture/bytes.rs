//! Reading a byte buffer front to back, shared by the two formats a capture reads:
//! `pgoutput` messages ([`super::pgoutput`]) and stored segments ([`super::segment`]).

use crate::{Error, Result};

/// Reads a byte buffer front to back; `short` makes the error of a read past its end.
pub(super) struct Bytes<'a> {
    pub(super) buf: &'a [u8],
    pub(super) at: usize,
    pub(super) short: fn() -> Error,
}

impl<'a> Bytes<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(self.short)?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }
    pub(super) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("N bytes taken"))
    }
}

/// A reader of one format is a [`Bytes`] with that format's reads added.
macro_rules! reads_bytes {
    ($t:ident) => {
        impl<'a> std::ops::Deref for $t<'a> {
            type Target = Bytes<'a>;
            fn deref(&self) -> &Bytes<'a> {
                &self.0
            }
        }
        impl<'a> std::ops::DerefMut for $t<'a> {
            fn deref_mut(&mut self) -> &mut Bytes<'a> {
                &mut self.0
            }
        }
    };
}
pub(super) use reads_bytes;
