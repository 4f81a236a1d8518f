//! A minimal, allocation-free protobuf wire walker over a borrowed buffer.
//!
//! The receive path only needs to find field boundaries (to copy encoded `TimeSeries` as they
//! are) and to read label strings in place (to validate them), so it walks the wire format
//! (<https://protobuf.dev/programming-guides/encoding/>) directly instead of decoding into owned
//! structs.

use super::error::DecodeError;

/// Protobuf wire types this walker understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireType {
    /// 0: varint.
    Varint,
    /// 1: 64-bit.
    Fixed64,
    /// 2: length-delimited.
    Len,
    /// 5: 32-bit.
    Fixed32,
}

/// One field: its number, wire type, and payload (the bytes of a length-delimited field, or the
/// raw bytes of a fixed-width one; varints carry their value in `varint`).
#[derive(Clone, Copy, Debug)]
pub struct Field<'a> {
    /// Field number.
    pub number: u32,
    /// Wire type.
    pub wire: WireType,
    /// Payload bytes (empty for varints).
    pub data: &'a [u8],
    /// The varint value (0 for other wire types).
    pub varint: u64,
    /// The whole field as it appears on the wire, key included.
    pub raw: &'a [u8],
}

/// Iterates over the fields of one message.
pub struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    /// Walks the fields of `buf`, which holds exactly one message.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(DecodeError::Protobuf("truncated varint".into()));
            };
            self.pos += 1;
            if shift == 63 && b > 1 {
                // As prost and Go's protowire: a tenth byte may carry only the top bit.
                return Err(DecodeError::Protobuf("varint overflows 64 bits".into()));
            }
            value |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(DecodeError::Protobuf("varint longer than 10 bytes".into()))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                DecodeError::Protobuf("field runs past the end of the message".into())
            })?;
        let data = &self.buf[self.pos..end];
        self.pos = end;
        Ok(data)
    }

    fn next_field(&mut self) -> Result<Field<'a>, DecodeError> {
        let start = self.pos;
        let key = self.varint()?;
        let number = u32::try_from(key >> 3)
            .map_err(|_| DecodeError::Protobuf("field number out of range".into()))?;
        if number == 0 {
            return Err(DecodeError::Protobuf("field number 0".into()));
        }
        let (wire, data, varint) = match key & 7 {
            0 => (WireType::Varint, &[][..], self.varint()?),
            1 => (WireType::Fixed64, self.take(8)?, 0),
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len)
                    .map_err(|_| DecodeError::Protobuf("length out of range".into()))?;
                (WireType::Len, self.take(len)?, 0)
            }
            5 => (WireType::Fixed32, self.take(4)?, 0),
            other => {
                return Err(DecodeError::Protobuf(format!(
                    "unsupported wire type {other}"
                )))
            }
        };
        Ok(Field {
            number,
            wire,
            data,
            varint,
            raw: &self.buf[start..self.pos],
        })
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let item = self.next_field();
        if item.is_err() {
            // Stop after the first error: the rest of the buffer is not trustworthy.
            self.pos = self.buf.len();
        }
        Some(item)
    }
}

/// A minimally encoded varint at `*i`, advancing it; `None` when truncated, longer than 10
/// bytes or padded (a last byte of zero), which the full path then judges.
#[inline(always)]
pub(crate) fn varint_at(b: &[u8], i: &mut usize) -> Option<u64> {
    let first = *b.get(*i)?;
    *i += 1;
    if first < 0x80 {
        return Some(u64::from(first));
    }
    let mut v = u64::from(first & 0x7f);
    let mut shift = 7;
    loop {
        let c = *b.get(*i)?;
        *i += 1;
        if shift == 63 && c > 1 {
            return None;
        }
        v |= u64::from(c & 0x7f) << shift;
        if c < 0x80 {
            return (c != 0).then_some(v);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

/// The length-delimited payload at `*i` (after its key), advancing past it.
#[inline(always)]
pub(crate) fn len_at<'a>(b: &'a [u8], i: &mut usize) -> Option<&'a [u8]> {
    let n = usize::try_from(varint_at(b, i)?).ok()?;
    let end = i.checked_add(n)?;
    let s = b.get(*i..end)?;
    *i = end;
    Some(s)
}

/// A label in its canonical encoding (`name = 1`, then `value = 2` omitted when empty), as
/// every sender writes it; anything else goes to the full path. Returns the name's offset in
/// `l`, the name and the value.
#[inline(always)]
pub fn fast_label(l: &[u8]) -> Option<(usize, &[u8], &[u8])> {
    if l.first() != Some(&0x0a) {
        return None;
    }
    let mut i = 1;
    let name = len_at(l, &mut i)?;
    let start = i - name.len();
    if i == l.len() {
        return Some((start, name, &[]));
    }
    if l[i] != 0x12 {
        return None;
    }
    i += 1;
    let value = len_at(l, &mut i)?;
    (i == l.len() && !value.is_empty()).then_some((start, name, value))
}

/// Appends a varint to `out`.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a length-delimited field (key, length, bytes) to `out`.
pub fn put_len_field(out: &mut Vec<u8>, number: u32, data: &[u8]) {
    put_varint(out, u64::from(number) << 3 | 2);
    put_varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// The encoded size of a length-delimited field holding `len` bytes.
pub fn len_field_size(number: u32, len: usize) -> usize {
    varint_size(u64::from(number) << 3 | 2) + varint_size(len as u64) + len
}

fn varint_size(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_sizes_match_encoding() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_size(v), "value {v}");
            let mut f = Fields::new(&out);
            assert_eq!(f.varint().unwrap(), v);
        }
    }

    #[test]
    fn truncated_and_overlong_inputs_are_errors() {
        for bad in [
            &[0x0a, 0x05, 1, 2][..],
            &[0x80][..],
            &[0x0b][..],
            &[0x00, 0x00][..],
        ] {
            let r: Result<Vec<_>, _> = Fields::new(bad).collect();
            assert!(r.is_err(), "{bad:?} should not parse");
        }
        // A varint whose tenth byte carries more than the 64th bit overflows; with only the
        // top bit it is u64::MAX-sized and valid.
        let over = [
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
        ];
        let r: Result<Vec<_>, _> = Fields::new(&over).collect();
        assert!(r.is_err());
        assert_eq!(varint_at(&over, &mut 1), None);
        let max = [
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert_eq!(Fields::new(&max).count(), 1);
        assert_eq!(varint_at(&max, &mut 1), Some(u64::MAX));
    }
}
