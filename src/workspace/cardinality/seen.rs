//! [`Seen`]: every series key sent within the window, with the hour it was last sent, in one
//! open-addressing table of packed `hour << 32 | key` words (0: empty), probed linearly from a
//! Fibonacci hash of the key. A steady stream of known series costs one word read per series,
//! usually one cache line; the table is rebuilt without the expired keys once an hour.

/// Keys per slot at most, before the table doubles.
const MAX_LOAD: f64 = 0.75;

#[derive(Debug)]
pub(super) struct Seen {
    slots: Vec<u64>,
    /// log2 of the slot count.
    bits: u32,
    len: usize,
}

impl Default for Seen {
    fn default() -> Self {
        Self::with_bits(10)
    }
}

impl Seen {
    fn with_bits(bits: u32) -> Self {
        Self {
            slots: vec![0; 1 << bits],
            bits,
            len: 0,
        }
    }

    /// Keys held.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn home(&self, key: u32) -> usize {
        (key.wrapping_mul(0x9e37_79b1) >> (32 - self.bits)) as usize
    }

    /// Marks `key` as sent in `hour` (> 0); returns whether it was not yet sent in that hour.
    #[inline]
    pub(super) fn mark(&mut self, key: u32, hour: u32) -> bool {
        let word = u64::from(hour) << 32 | u64::from(key);
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        loop {
            let s = self.slots[i];
            if s == 0 {
                self.slots[i] = word;
                self.len += 1;
                if self.len as f64 > MAX_LOAD * self.slots.len() as f64 {
                    self.rebuild(self.bits + 1, |_| true);
                }
                return true;
            }
            if s as u32 == key {
                if s == word {
                    return false;
                }
                self.slots[i] = word;
                return true;
            }
            i = (i + 1) & mask;
        }
    }

    /// Marks each of `keys` as sent in `hour`, calling `new` with the position of each one not
    /// yet sent in that hour. Before each run of 32 keys it reads their home slots with no
    /// branch on what they hold, so that their cache misses overlap instead of queueing.
    pub(super) fn mark_all(&mut self, keys: &[u32], hour: u32, mut new: impl FnMut(usize)) {
        for (c, run) in keys.chunks(32).enumerate() {
            let mut warm = 0u64;
            for &k in run {
                warm ^= self.slots[self.home(k)];
            }
            std::hint::black_box(warm);
            for (j, &k) in run.iter().enumerate() {
                if self.mark(k, hour) {
                    new(c * 32 + j);
                }
            }
        }
    }

    /// Forgets every key last sent before `first`.
    pub(super) fn expire(&mut self, first: u32) {
        let keep = |w: u64| (w >> 32) as u32 >= first;
        let live = self.slots.iter().filter(|w| **w != 0 && keep(**w)).count();
        let mut bits = 10;
        while live as f64 > MAX_LOAD * f64::from(1u32 << bits) / 2.0 {
            bits += 1;
        }
        self.rebuild(bits, keep);
    }

    fn rebuild(&mut self, bits: u32, keep: impl Fn(u64) -> bool) {
        let old = std::mem::replace(self, Self::with_bits(bits));
        let mask = self.slots.len() - 1;
        for w in old.slots.into_iter().filter(|w| *w != 0 && keep(*w)) {
            let mut i = self.home(w as u32);
            while self.slots[i] != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = w;
            self.len += 1;
        }
    }

    /// Bytes of the table.
    #[cfg(test)]
    fn memory_bytes(&self) -> usize {
        self.slots.len() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_once_an_hour_grows_and_expires() {
        let mut s = Seen::default();
        for k in 0..10_000u32 {
            assert!(s.mark(k.wrapping_mul(2_654_435_761), 7));
        }
        assert_eq!(s.len(), 10_000);
        let keys: Vec<u32> = (0..10_100u32)
            .map(|k| k.wrapping_mul(2_654_435_761))
            .collect();
        let mut new = Vec::new();
        s.mark_all(&keys, 7, |i| new.push(i));
        assert_eq!(new, (10_000..10_100).collect::<Vec<_>>());
        let mut again = 0;
        s.mark_all(&keys[..10_000], 7, |_| again += 1);
        assert_eq!(again, 0);
        s.expire(0);
        s.mark_all(&keys[10_000..], 6, |_| {});
        assert_eq!(s.len(), 10_100);
        for k in 0..10_000u32 {
            assert!(!s.mark(k.wrapping_mul(2_654_435_761), 7), "{k}");
        }
        for k in 0..100u32 {
            assert!(s.mark(k.wrapping_mul(2_654_435_761), 9));
        }
        // The 100 marked after them in hour 6 are older still.
        s.expire(7);
        assert_eq!(s.len(), 10_000);
        // Key 0 (k = 0 above) is a key like any other: the hour keeps its word from being 0.
        assert!(!s.mark(0, 9));
        assert!(s.mark(0, 10) && !s.mark(0, 10) && s.mark(0, 9));
        s.expire(8);
        assert_eq!(s.len(), 100);
        assert!(s.memory_bytes() < 8 * 4096);
        assert!(!s.mark(5u32.wrapping_mul(2_654_435_761), 9));
        assert!(s.mark(500u32.wrapping_mul(2_654_435_761), 9));
    }
}
