//! The replay window for transport messages with explicit nonces: accepts
//! each nonce once, tolerates reordering within the window, refuses
//! anything older. (Streams may redeliver a message; the channel must drop
//! the copy without failing.)

/// Nonces further back than this behind the newest are refused.
pub const WINDOW: u64 = 1024;

const WORDS: usize = (WINDOW / 64) as usize;

/// Which nonces in the window below the newest have been seen.
#[derive(Debug, Clone, Default)]
pub struct ReplayWindow {
    /// One more than the highest nonce accepted (0: none yet).
    top: u64,
    /// Bit `i` set: nonce `top - 1 - i` was accepted.
    seen: [u64; WORDS],
}

impl ReplayWindow {
    /// Whether `n` is new and not too old (does not record it).
    pub fn check(&self, n: u64) -> bool {
        if n >= self.top {
            return true;
        }
        let back = self.top - 1 - n;
        back < WINDOW && !self.bit(back)
    }

    /// Records `n` as accepted; call only after it authenticated.
    pub fn accept(&mut self, n: u64) {
        if n >= self.top {
            let shift = n + 1 - self.top;
            self.shift(shift);
            self.top = n + 1;
            self.set(0);
        } else {
            let back = self.top - 1 - n;
            if back < WINDOW {
                self.set(back);
            }
        }
    }

    fn bit(&self, i: u64) -> bool {
        self.seen[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: u64) {
        self.seen[(i / 64) as usize] |= 1 << (i % 64);
    }

    /// Moves every bit `by` places further back.
    fn shift(&mut self, by: u64) {
        if by >= WINDOW {
            self.seen = [0; WORDS];
            return;
        }
        let (words, bits) = ((by / 64) as usize, (by % 64) as u32);
        for i in (0..WORDS).rev() {
            let mut v = if i >= words {
                self.seen[i - words] << bits
            } else {
                0
            };
            if bits > 0 && i > words {
                v |= self.seen[i - words - 1] >> (64 - bits);
            }
            self.seen[i] = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn in_order_duplicates_and_old() {
        let mut w = ReplayWindow::default();
        for n in 0..3000 {
            assert!(w.check(n));
            w.accept(n);
            assert!(!w.check(n));
        }
        assert!(!w.check(0));
        assert!(!w.check(2999 - WINDOW));
        assert!(w.check(5000));
    }

    proptest! {
        /// Against a model that remembers everything: within the window the
        /// answers agree; older nonces are always refused.
        #[test]
        fn matches_a_model(ops in prop::collection::vec(0u64..3000, 1..400)) {
            let mut w = ReplayWindow::default();
            let mut seen = BTreeSet::new();
            let mut top = 0u64;
            for n in ops {
                let fresh = !seen.contains(&n);
                let in_window = n >= top || top - 1 - n < WINDOW;
                prop_assert_eq!(w.check(n), fresh && in_window);
                if w.check(n) {
                    w.accept(n);
                    seen.insert(n);
                    top = top.max(n + 1);
                }
            }
        }
    }
}
