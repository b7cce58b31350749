//! Transfer priorities (`SetPriority`, capability `PRIORITY`).

use crate::error::{ProtocolError, Result};

/// How urgent a client's transfers are (`SetPriority`). Servers record it with each transfer;
/// scheduling by it is a server's business and may come later, but the meaning is fixed:
/// `High` before `Normal` before `Low`. Ordered so that `High > Normal > Low`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Background work.
    Low,
    /// The default of every session.
    #[default]
    Normal,
    /// Urgent.
    High,
}

impl Priority {
    /// Every priority, lowest first.
    pub const ALL: [Priority; 3] = [Priority::Low, Priority::Normal, Priority::High];

    /// The wire code: 0 low, 1 normal, 2 high.
    pub fn code(self) -> u8 {
        match self {
            Priority::Low => 0,
            Priority::Normal => 1,
            Priority::High => 2,
        }
    }

    /// The priority for a wire code; other codes are malformed.
    pub fn from_code(code: u8) -> Result<Priority> {
        match code {
            0 => Ok(Priority::Low),
            1 => Ok(Priority::Normal),
            2 => Ok(Priority::High),
            _ => Err(ProtocolError::malformed("SetPriority", "unknown priority")),
        }
    }

    /// The name used on the command line and in logs: `low`, `normal`, `high`.
    pub fn name(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
        }
    }

    /// The priority for a name (any case), or `None`.
    pub fn from_name(name: &str) -> Option<Priority> {
        Priority::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::tests::encoded;
    use crate::message::Message;

    #[test]
    fn set_priority_layout() {
        for (p, code) in [
            (Priority::Low, 0),
            (Priority::Normal, 1),
            (Priority::High, 2),
        ] {
            assert_eq!(encoded(&Message::SetPriority(p)), [0, 0, 0, 2, 0x16, code]);
            assert_eq!(Priority::from_name(&p.name().to_uppercase()), Some(p));
        }
        assert!(Message::decode(&[0, 0, 0, 2, 0x16, 3]).is_err());
        assert!(Priority::High > Priority::Normal && Priority::Normal > Priority::Low);
        assert_eq!(Priority::default(), Priority::Normal);
        assert_eq!(Priority::from_name("urgent"), None);
    }
}
