//! How a colour image is fitted (ARCHITECTURE.md, "Images"): the names shared by a plain fit's
//! report and the luma-chroma planes (`super::planes`), kept apart so that neither module
//! needs the other for them.

use serde::{Deserialize, Serialize};

/// How a colour image is fitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Colour {
    /// The paper's: one network, the channel a third grid axis.
    ChannelAxis,
    /// Three gray networks: luma and two chroma planes.
    LumaChroma,
}

impl Colour {
    pub fn as_str(self) -> &'static str {
        match self {
            Colour::ChannelAxis => "channel-axis",
            Colour::LumaChroma => "luma-chroma",
        }
    }
}

/// The planes' names, in fitting order (model files and reports use them).
pub const PLANES: [&str; 3] = ["luma", "chroma-rb", "chroma-gm"];
