//! What the terminal the app writes to can take.

use std::io::IsTerminal;

/// Whether to colour what goes to `stream`: only a terminal, and not when `NO_COLOR` is set
/// to anything but the empty string (<https://no-color.org>). Log files, pipes and CI logs get
/// plain text.
pub fn colour(stream: &impl IsTerminal) -> bool {
    colour_with(stream.is_terminal(), std::env::var_os("NO_COLOR"))
}

fn colour_with(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_terminal_without_no_color_gets_colour() {
        assert!(colour_with(true, None));
        assert!(colour_with(true, Some("".into())));
        assert!(!colour_with(true, Some("1".into())));
        assert!(!colour_with(false, None));
    }
}
