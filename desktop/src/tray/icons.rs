//! The tray icons, built into the binary and decoded once at start into RGBA pixels, which each
//! tray backend turns into its own format.

use crate::menu::TrayLook;

const COLOUR_IDLE: &[u8] = include_bytes!("../../../icons/tray-idle.png");
const COLOUR_UP: &[u8] = include_bytes!("../../../icons/tray-up.png");
const COLOUR_FAILING: &[u8] = include_bytes!("../../../icons/tray-failing.png");
const TEMPLATE_IDLE: &[u8] = include_bytes!("../../../icons/tray-template-idle.png");
const TEMPLATE_UP: &[u8] = include_bytes!("../../../icons/tray-template-up.png");
const TEMPLATE_FAILING: &[u8] = include_bytes!("../../../icons/tray-template-failing.png");

/// Why the tray icons could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IconError {
    /// The PNG did not decode.
    #[error("cannot decode the {look:?} tray icon")]
    Decode {
        /// Which icon.
        look: TrayLook,
        /// What the PNG decoder refused.
        #[source]
        source: png::DecodingError,
    },
    /// The PNG decoded to something other than 8-bit RGB(A) or grey(+alpha).
    #[error("the {look:?} tray icon has an unsupported colour type {color:?}")]
    Format {
        /// Which icon.
        look: TrayLook,
        /// What it decoded to.
        color: png::ColorType,
    },
}

/// One decoded icon: 8-bit RGBA, row by row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rgba {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height` pixels of R, G, B, A.
    pub pixels: Vec<u8>,
}

/// Which drawing of the three looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Grey, green, red: for trays that show colour (Windows, Linux).
    Colour,
    /// Black shapes in the alpha channel, told apart by shape: for the macOS menu bar, which
    /// tints a template image to suit a light or dark bar.
    Template,
}

/// The icon of each [`TrayLook`], decoded.
#[derive(Clone, Debug)]
pub struct Icons {
    idle: Rgba,
    up: Rgba,
    failing: Rgba,
}

impl Icons {
    /// Decodes the built-in icons of `style`.
    pub fn decode(style: Style) -> Result<Self, IconError> {
        let [idle, up, failing] = match style {
            Style::Colour => [COLOUR_IDLE, COLOUR_UP, COLOUR_FAILING],
            Style::Template => [TEMPLATE_IDLE, TEMPLATE_UP, TEMPLATE_FAILING],
        };
        Ok(Self {
            idle: rgba(idle, TrayLook::Idle)?,
            up: rgba(up, TrayLook::Up)?,
            failing: rgba(failing, TrayLook::Failing)?,
        })
    }

    /// The icon for `look`.
    pub fn get(&self, look: TrayLook) -> &Rgba {
        match look {
            TrayLook::Idle => &self.idle,
            TrayLook::Up => &self.up,
            TrayLook::Failing => &self.failing,
        }
    }
}

/// Decodes a PNG into 8-bit RGBA.
fn rgba(bytes: &[u8], look: TrayLook) -> Result<Rgba, IconError> {
    let decode = |source| IconError::Decode { look, source };
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    // Palette and low bit depths become 8-bit channels, 16-bit ones are cut to 8, and a tRNS
    // chunk becomes an alpha channel: what is left is one of four 8-bit layouts.
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(decode)?;
    let size = reader.output_buffer_size().ok_or(IconError::Format {
        look,
        color: reader.output_color_type().0,
    })?;
    let mut buf = vec![0; size];
    let frame = reader.next_frame(&mut buf).map_err(decode)?;
    buf.truncate(frame.buffer_size());
    let pixels: Vec<u8> = match frame.color_type {
        png::ColorType::Rgba => buf,
        png::ColorType::Rgb => buf
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 0xff])
            .collect(),
        png::ColorType::GrayscaleAlpha => buf
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0], p[1]])
            .collect(),
        png::ColorType::Grayscale => buf.iter().flat_map(|&g| [g, g, g, 0xff]).collect(),
        color => return Err(IconError::Format { look, color }),
    };
    Ok(Rgba {
        width: frame.width,
        height: frame.height,
        pixels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOKS: [TrayLook; 3] = [TrayLook::Idle, TrayLook::Up, TrayLook::Failing];

    #[test]
    fn colour_icons_are_three_colours_of_one_shape() {
        let icons = Icons::decode(Style::Colour).expect("decode");
        for look in LOOKS {
            let icon = icons.get(look);
            assert_eq!((icon.width, icon.height), (64, 64));
            assert_eq!(icon.pixels.len(), 64 * 64 * 4);
        }
        let alpha = |look| -> Vec<u8> {
            icons
                .get(look)
                .pixels
                .chunks_exact(4)
                .map(|p| p[3])
                .collect()
        };
        assert_eq!(alpha(TrayLook::Idle), alpha(TrayLook::Up));
        assert_ne!(icons.get(TrayLook::Idle), icons.get(TrayLook::Up));
        assert_ne!(icons.get(TrayLook::Up), icons.get(TrayLook::Failing));
    }

    #[test]
    fn template_icons_are_black_and_differ_in_shape() {
        let icons = Icons::decode(Style::Template).expect("decode");
        let mut shapes = Vec::new();
        for look in LOOKS {
            let icon = icons.get(look);
            // 18 pt at 2x: the menu bar's icon height.
            assert_eq!((icon.width, icon.height), (36, 36), "{look:?}");
            // A template image carries its shape in the alpha channel only.
            assert!(
                icon.pixels.chunks_exact(4).all(|p| p[..3] == [0, 0, 0]),
                "{look:?} is not black"
            );
            let shape: Vec<u8> = icon.pixels.chunks_exact(4).map(|p| p[3]).collect();
            let opaque = shape.iter().filter(|&&a| a == 0xff).count();
            assert!(
                opaque > 36 * 36 / 10,
                "{look:?} is almost empty: {opaque} px"
            );
            shapes.push(shape);
        }
        assert_ne!(shapes[0], shapes[1]);
        assert_ne!(shapes[1], shapes[2]);
        assert_ne!(shapes[0], shapes[2]);
    }
}
